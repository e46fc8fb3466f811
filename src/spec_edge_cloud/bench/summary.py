"""Per-mode figures from per-response records, with the definitions of DESIGN.md "Metrics".

Both the replay benchmark (measured) and the profile simulator (predicted) produce the same flat
records, so one function summarises both and their figures mean exactly the same thing:

    mode, frame, tokens, ttfa_s (None: no action completed), ttc_s, rounds, drafted, accepted,
    predrafts, hits, exit_agree {layer: n}, exit_total {layer: n}, target_compute_s,
    bytes_up, bytes_down

TTFA: frame capture -> first complete action's last token final. TTC: capture -> last token final.
Per-token latency = TTC / tokens. Speedup = TTC(cloud) / TTC(mode) over the same frames (ratio of
the sums). Acceptance = accepted / drafted; tokens per round = tokens committed by verification
rounds (accepted + 1 each) / rounds, so an adaptive response that switched to cloud decoding
half-way counts only its speculative part.
Bound: N x draft time per token + RTT + one verification; TTC / bound is reported per response.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


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


def summarize(records: list[dict], bound: Bound | None = None, baseline: str = "cloud") -> dict[str, dict]:
    """{mode: figures}, modes in first-seen order."""
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_mode[r["mode"]].append(r)
    base = {(r.get("frame"), r.get("repeat")): r["ttc_s"] for r in by_mode.get(baseline, [])}
    out = {}
    for mode, rs in by_mode.items():
        ttc = [r["ttc_s"] for r in rs]
        per_token = [r["ttc_s"] / r["tokens"] for r in rs if r["tokens"]]
        ttfa = [r["ttfa_s"] for r in rs if r.get("ttfa_s") is not None]
        tokens = sum(r["tokens"] for r in rs)
        agree, total = defaultdict(int), defaultdict(int)
        for r in rs:
            for layer, n in r.get("exit_total", {}).items():
                total[str(layer)] += n
                agree[str(layer)] += r.get("exit_agree", {}).get(layer, 0)
        paired = [(base[k], r["ttc_s"]) for r in rs if (k := (r.get("frame"), r.get("repeat"))) in base]
        out[mode] = {
            "responses": len(rs),
            "fallbacks": sum(not r.get("verified", True) for r in rs if mode != "edge"),  # finished on the robot
            "tokens": tokens,
            "ttfa_s": {"median": _q(ttfa, 50), "p90": _q(ttfa, 90), "responses_with_action": len(ttfa)},
            "ttc_s": {"median": _q(ttc, 50), "p90": _q(ttc, 90), "mean": float(np.mean(ttc))},
            "per_token_s": {"median": _q(per_token, 50), "p90": _q(per_token, 90)},
            "acceptance": _ratio(sum(r["accepted"] for r in rs), sum(r["drafted"] for r in rs)),
            "tokens_per_round": _ratio(sum(r["accepted"] for r in rs) + (n := sum(r["rounds"] for r in rs)), n),
            "exit_agreement": {layer: agree[layer] / n for layer, n in sorted(total.items()) if n},
            "hit_rate": _ratio(sum(r["hits"] for r in rs), sum(r["predrafts"] for r in rs)),
            "cloud_s_per_token": _ratio(sum(r["target_compute_s"] for r in rs), tokens),
            "cloud_s_per_response": float(np.mean([r["target_compute_s"] for r in rs])),
            "bytes_up_per_token": _ratio(sum(r["bytes_up"] for r in rs), tokens),
            "bytes_down_per_token": _ratio(sum(r["bytes_down"] for r in rs), tokens),
            "speedup": _ratio(sum(b for b, _ in paired), sum(m for _, m in paired)) if paired else None,
            "ttc_over_bound": _q([r["ttc_s"] / bound.seconds(r["tokens"]) for r in rs], 50) if bound else None,
        }
    return out
