"""Per-mode figures from per-response records, with the definitions of docs/design.md "Metrics".

Both the replay benchmark (measured) and the profile simulator (predicted) fill the same typed
record, `ResponseRecord`, so one function summarises both and their figures mean exactly the same
thing. Results hold records as plain dicts (`to_dict`, for JSON); `summarize` reads them back
through the same type, so a record that does not fit the schema is an error, not a silent zero.

TTFA: frame capture -> first complete action's last token final. TTC: capture -> last token final.
Per-token latency = TTC / tokens. Speedup = TTC(cloud) / TTC(mode) over the same frames (ratio of
the sums). Acceptance = accepted / drafted; tokens per round = tokens committed by verification
rounds (accepted + 1 each) / rounds, so an adaptive response that switched to cloud decoding
half-way counts only its speculative part.
Bound: N x draft time per token + RTT + one verification; TTC / bound is reported per response.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..decoding.metrics import ResponseMetrics, tokens_per_round


@dataclass
class ResponseRecord:
    """One response as every benchmark reports it. Times from frame capture (replay) or the job's
    start (simulator); `ttfa_s` None: no action completed."""
    mode: str
    tokens: int
    ttc_s: float
    ttfa_s: float | None = None
    frame: int | None = None
    repeat: int | None = None
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    predrafts: int = 0
    hits: int = 0
    predrafts_unshown: int = 0  # of the pre-drafts, on early verdicts not trusted to be shown
    early_trusted: int = 0      # early verdicts acted on (shown, pre-drafted on), and of them missed
    early_trusted_missed: int = 0
    branches_sent: dict[str, int] = field(default_factory=dict)  # fan-out: branch rank -> sent, verified
    branch_hits: dict[str, int] = field(default_factory=dict)
    exit_agree: dict[str, int] = field(default_factory=dict)   # exit layer -> verdicts equal to the final one
    exit_total: dict[str, int] = field(default_factory=dict)
    target_compute_s: float = 0.0
    draft_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    verified: bool = True
    fallback_reason: str | None = None
    switched_to_cloud_at: int | None = None
    gamma_used: list[int] = field(default_factory=list)
    reused_rounds: int = 0      # rounds a recent answer proposed (decoding/reuse.py), their tokens, accepted
    reused_drafted: int = 0
    reused_accepted: int = 0
    grammar_forced: int = 0     # drafted tokens the grammar forced (no draft step; decoding/draft.py)
    # measured runs only (the replay): what was said, when, and the round-by-round timeline
    ttft_s: float | None = None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    first_action_token: int | None = None
    start_offset_s: float = 0.0
    events: list = field(default_factory=list)
    timeline: dict | None = None
    round_trace: list = field(default_factory=list)

    @classmethod
    def from_metrics(cls, m: ResponseMetrics, **fields_: object) -> "ResponseRecord":
        """The decoding metrics of a response, with what the benchmark adds (`fields_` win)."""
        return cls(**{
            "mode": m.mode, "tokens": m.tokens, "ttc_s": m.ttc_s, "rounds": m.rounds, "drafted": m.drafted,
            "accepted": m.accepted, "predrafts": m.predrafts, "hits": m.hits, "predrafts_unshown": m.predrafts_unshown,
            "early_trusted": m.early_trusted, "early_trusted_missed": m.early_trusted_missed,
            "branches_sent": {str(k): v for k, v in m.branches_sent.items()},
            "branch_hits": {str(k): v for k, v in m.branch_hits.items()},
            "exit_agree": {str(k): v for k, v in m.exit_agree.items()},
            "exit_total": {str(k): v for k, v in m.exit_total.items()},
            "target_compute_s": m.target_compute_s, "draft_s": m.draft_s, "verified": m.unverified_from is None,
            "fallback_reason": m.fallback_reason, "switched_to_cloud_at": m.switched_to_cloud_at,
            "gamma_used": list(m.gamma_used), "ttft_s": m.ttft_s, "reused_rounds": m.reused_rounds,
            "reused_drafted": m.reused_drafted, "reused_accepted": m.reused_accepted,
            "grammar_forced": m.grammar_forced, **fields_})

    @classmethod
    def from_dict(cls, d: dict) -> "ResponseRecord":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"not a response record: unknown fields {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Bound:
    """The fastest any speculative scheme could answer: a perfect draft, one round."""
    draft_s_per_token: float
    rtt_s: float
    verify_s: float

    def seconds(self, tokens: int) -> float:
        return tokens * self.draft_s_per_token + self.rtt_s + self.verify_s


def _q(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def summarize(records: list[ResponseRecord | dict], bound: Bound | None = None,
              baseline: str = "cloud") -> dict[str, dict]:
    """{mode: figures}, modes in first-seen order."""
    by_mode: dict[str, list[ResponseRecord]] = defaultdict(list)
    for r in records:
        r = r if isinstance(r, ResponseRecord) else ResponseRecord.from_dict(r)
        by_mode[r.mode].append(r)
    base = {(r.frame, r.repeat): r.ttc_s for r in by_mode.get(baseline, [])}
    out = {}
    for mode, rs in by_mode.items():
        ttc = [r.ttc_s for r in rs]
        per_token = [r.ttc_s / r.tokens for r in rs if r.tokens]
        ttfa = [r.ttfa_s for r in rs if r.ttfa_s is not None]
        tokens = sum(r.tokens for r in rs)
        agree, total = defaultdict(int), defaultdict(int)
        sent, verified = defaultdict(int), defaultdict(int)
        for r in rs:
            for layer, n in r.exit_total.items():
                total[str(layer)] += n
                agree[str(layer)] += r.exit_agree.get(layer, 0)
            for rank, n in r.branches_sent.items():
                sent[str(rank)] += n
                verified[str(rank)] += r.branch_hits.get(rank, 0)
        paired = [(base[k], r.ttc_s) for r in rs if (k := (r.frame, r.repeat)) in base]
        out[mode] = {
            "responses": len(rs),
            "fallbacks": sum(not r.verified for r in rs if mode != "edge"),  # finished on the robot
            "tokens": tokens,
            "ttfa_s": {"median": _q(ttfa, 50), "p90": _q(ttfa, 90), "responses_with_action": len(ttfa)},
            "ttc_s": {"median": _q(ttc, 50), "p90": _q(ttc, 90), "mean": float(np.mean(ttc))},
            "per_token_s": {"median": _q(per_token, 50), "p90": _q(per_token, 90)},
            "acceptance": _ratio(sum(r.accepted for r in rs), sum(r.drafted for r in rs)),
            "tokens_per_round": tokens_per_round(sum(r.accepted for r in rs), n := sum(r.rounds for r in rs)) or None,
            "exit_agreement": {layer: agree[layer] / n for layer, n in sorted(total.items()) if n},
            "hit_rate": _ratio(sum(r.hits for r in rs), sum(r.predrafts for r in rs)),
            "predrafts": sum(r.predrafts for r in rs),
            "predrafts_unshown": sum(r.predrafts_unshown for r in rs),
            # how often the early verdicts acted on were contradicted (adaptive: bounded by calibration)
            "early_trusted": sum(r.early_trusted for r in rs),
            "early_miss_rate": _ratio(sum(r.early_trusted_missed for r in rs), sum(r.early_trusted for r in rs)),
            # fan-out: per branch rank (0: the exit's verdict), branches sent and the share verified
            "branches_sent": dict(sorted(sent.items())),
            "branch_hit_rate": {rank: verified[rank] / n for rank, n in sorted(sent.items()) if n},
            "reused_rounds": _ratio(sum(r.reused_rounds for r in rs), n),   # share of rounds a reused answer drafted
            "reused_acceptance": _ratio(sum(r.reused_accepted for r in rs), sum(r.reused_drafted for r in rs)),
            "grammar_forced": _ratio(sum(r.grammar_forced for r in rs), sum(r.drafted for r in rs)),  # of drafted
            "cloud_s_per_token": _ratio(sum(r.target_compute_s for r in rs), tokens),
            "cloud_s_per_response": float(np.mean([r.target_compute_s for r in rs])),
            "bytes_up_per_token": _ratio(sum(r.bytes_up for r in rs), tokens),
            "bytes_down_per_token": _ratio(sum(r.bytes_down for r in rs), tokens),
            "speedup": _ratio(sum(b for b, _ in paired), sum(m for _, m in paired)) if paired else None,
            "ttc_over_bound": _q([r.ttc_s / bound.seconds(r.tokens) for r in rs], 50) if bound else None,
        }
    return out
