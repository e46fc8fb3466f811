"""Per-response metrics, with the definitions of docs/design.md (every benchmark reads these)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields


def tokens_per_round(accepted: int, rounds: int) -> float:
    """What a verification round commits on average: its accepted draft tokens plus the target's own
    next token. Tokens decoded outside rounds (cloud decoding after an adaptive switch, an edge
    finish) do not count, so the figure stays the one the cost model's E describes."""
    return (accepted + rounds) / rounds if rounds else 0.0


@dataclass
class ResponseMetrics:
    mode: str
    tokens: int = 0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    predrafts: int = 0
    hits: int = 0
    early_messages: int = 0
    early_trusted: int = 0            # early verdicts the policy trusted (shown, pre-drafted on) ...
    early_trusted_missed: int = 0     # ... that their FINAL then contradicted
    predrafts_unshown: int = 0        # of `predrafts`, on early verdicts not trusted (not shown)
    branches_sent: dict = field(default_factory=lambda: defaultdict(int))  # fan-out: rank -> branches sent
    branch_hits: dict = field(default_factory=lambda: defaultdict(int))    # rank -> branches verified
    reused_rounds: int = 0            # rounds whose draft a recent answer proposed (decoding/reuse.py)
    reused_drafted: int = 0           # ... their tokens (counted in `drafted` too)
    reused_accepted: int = 0          # ... accepted (counted in `accepted` too)
    grammar_forced: int = 0           # drafted tokens the answer's grammar forced, without a draft step
    exit_agree: dict = field(default_factory=lambda: defaultdict(int))   # layer -> verdicts equal to final
    exit_total: dict = field(default_factory=lambda: defaultdict(int))
    ttft_s: float | None = None       # first final token
    ttc_s: float = 0.0                # last token final
    draft_s: float = 0.0              # robot time spent drafting
    target_compute_s: float = 0.0     # cloud compute reported by the verifier
    unverified_from: int | None = None  # index of the first token produced without the cloud (fallback)
    fallback_reason: str | None = None
    switched_to_cloud_at: int | None = None  # adaptive: token index where it chose plain cloud decoding
    gamma_used: list = field(default_factory=list)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        return tokens_per_round(self.accepted, self.rounds)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.predrafts if self.predrafts else 0.0

    @property
    def early_miss_rate(self) -> float | None:
        """The realised miss rate of the trusted early verdicts (what calibration bounds)."""
        return self.early_trusted_missed / self.early_trusted if self.early_trusted else None

    def branch_hit_rate(self) -> dict[int, float]:
        """Per branch rank of fan-out pre-drafts (0: on the exit's verdict), the share verified."""
        return {r: self.branch_hits[r] / n for r, n in sorted(self.branches_sent.items()) if n}

    def exit_agreement(self) -> dict[int, float]:
        return {k: self.exit_agree[k] / n for k, n in sorted(self.exit_total.items()) if n}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["exit_agree"], d["exit_total"] = dict(self.exit_agree), dict(self.exit_total)
        d["branches_sent"], d["branch_hits"] = dict(self.branches_sent), dict(self.branch_hits)
        d["gamma_used"] = list(self.gamma_used)
        d.update(acceptance=self.acceptance, tokens_per_round=self.tokens_per_round, hit_rate=self.hit_rate,
                 early_miss_rate=self.early_miss_rate,
                 exit_agreement=self.exit_agreement(), branch_hit_rate=self.branch_hit_rate(),
                 per_token_s=self.ttc_s / self.tokens if self.tokens else None)
        return d
