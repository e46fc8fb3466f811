"""Online choice of draft length, exit threshold and mode, from what the robot measures.

Cost model (docs/design.md, "When speculation across a link pays"). Cloud decoding costs the target's
step time t per token. A speculative round that starts from scratch (no pre-draft, or a miss)
costs γ·d (drafting) + R (round trip) + V(γ+1) (verification). A round whose pre-draft hits was
already queued on the server: the next pass starts when the current one ends, unless the pre-draft
is still on its way, so it costs V(γ+1) + max(0, γ·d + R - L), where L is how much earlier the
early verdict arrives than the final one. With hit rate h the expected round costs
h·T_hit + (1-h)·T_miss and commits E(a, γ) = (1 - a^(γ+1)) / (1 - a) tokens at acceptance a.
Pick the γ with the lowest time per token, up to `max_gamma` (16: a whole action answer, so
that where the draft is nearly always right one pass verifies the answer, the pass costing
nearly the same for 17 tokens as for 5); pick cloud decoding when it is clearly cheaper (a margin
keeps noise from flapping between the two).

Estimates: a is the per-token acceptance probability of that formula (not the share of drafted
tokens accepted): a round that accepts k of γ tokens saw k acceptances in k + 1 trials, or γ in γ
if all were accepted; a = decayed sum of acceptances / decayed sum of trials. Times are
exponentially weighted averages. The first round of a response is not used for the round trip:
it also waits for the prompt's prefill.

Exit thresholds: with an `ExitCalibration` (decoding/calibration.py, the default for a
`DecodeConfig` with `exit_miss_target` > 0) each FINAL labels every exit's verdict, and the robot
shows (and pre-drafts on) the first EARLY whose exit is calibrated to miss below the target at its
confidence. Without one, a single threshold follows the pre-draft hit rate.

Unshown pre-drafts: an EARLY the calibration does not (yet) trust may still be worth a pre-draft, as
long as nobody sees it: a miss costs only the drafting that delays the next round, max(0, γ·d - L),
and the bytes; a hit saves min(γ·d + R, L). The robot pre-drafts on it, without showing it, when the
exit's estimated hit rate at that confidence (`ExitCalibration.hit_rate`: the labels so far, shrunk
toward the exit's rate) reaches the break-even (1-h)·miss = h·hit, and at least `predraft_min_hit`
(`DecodeConfig`; below it most pre-drafts would be wasted bytes; 0: off). The cloud is asked for the
EARLYs at or above the lower of the two thresholds.
"""
from __future__ import annotations

import math

from .calibration import ExitCalibration
from .modes import DecodeConfig


def expected_tokens(a: float, gamma: int) -> float:
    a = min(max(a, 0.0), 0.999)
    return (1 - a ** (gamma + 1)) / (1 - a)


class _Ewma:
    def __init__(self, alpha: float = 0.3, value: float | None = None):
        self.alpha, self.value = alpha, value

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


class AdaptiveController:
    SWITCH_MARGIN = 0.9  # speculation must be predicted at least 10% faster to leave cloud decoding
    LEAVE_SPEC_MARGIN = 0.8  # cloud decoding must be 20% faster to leave speculation (its early rounds are the noisiest)
    MIN_ROUNDS = 2       # rounds of evidence (since the last probe began) before leaving speculation
    MIN_ROUNDS_FOR_GAMMA = 8  # rounds of evidence before tuning the draft length
    early_verdicts = True     # as a policy of decoding/rounds.py: always asks for early verdicts

    def __init__(self, gamma: int = 4, max_gamma: int = 16, threshold: float = 0.5, probe_every: int = 8,
                 decay: float = 0.95, calibration: ExitCalibration | None = None, predraft_min_hit: float = 0.0):
        """`calibration`: which exits' early verdicts to trust (`threshold`, what the cloud is asked
        for, then follows it); `predraft_min_hit` > 0: pre-draft unshown on others worth it."""
        self.predraft_min_hit_floor = predraft_min_hit
        self.gamma, self.max_gamma = gamma, max_gamma
        self.calibration = calibration
        self.decay = decay
        self._accepts, self._trials = 3.0, 5.0      # prior: a = 0.6, the weight of about one round
        self.draft_token_s = _Ewma()
        self.rtt_s = _Ewma()
        self.pass_fixed_s = _Ewma()    # verification time = fixed + per_token * tokens
        self.pass_token_s = _Ewma(value=0.0)
        self.step_s = _Ewma()
        self.hit_rate = _Ewma(0.2, 0.5)
        self.early_lead_s = _Ewma()
        self._spent_s, self._committed = 0.0, 0.0   # decayed sums: measured speculation cost per token
        self.use_predraft = True
        self.mode = "spec"
        self.responses = 0
        self.probe_every = probe_every
        self._probe_wait = probe_every  # responses in cloud decoding before the next probe of speculation
        self._since_probe = 0
        self._rounds_seen = 0           # rounds since the last probe began
        self._rounds_total = 0
        self.threshold = self._asked() if calibration is not None else threshold

    @classmethod
    def for_config(cls, config: DecodeConfig) -> "AdaptiveController":
        """The controller `config` describes: its draft length to start from, and its exits calibrated
        to `exit_miss_target` (or, at 0, a threshold starting at `exit_threshold`)."""
        calibration = ExitCalibration(config.exit_miss_target, config.exit_bound_confidence) \
            if config.exit_miss_target > 0 else None
        return cls(gamma=config.gamma, threshold=config.exit_threshold, calibration=calibration,
                   predraft_min_hit=config.predraft_min_hit)

    @property
    def predraft(self) -> bool:
        return self.use_predraft

    @property
    def acceptance(self) -> float:
        return self._accepts / self._trials if self._trials else 0.0

    # -- observations ----------------------------------------------------------------------------
    def observe_draft(self, seconds: float, tokens: int) -> None:
        if tokens:
            self.draft_token_s.add(seconds / tokens)

    def observe_round(self, drafted: int, accepted: int, compute_s: float, tokens_in_pass: int,
                      rtt_s: float | None, early_lead_s: float | None = None) -> None:
        """One verified round: `rtt_s` is the wait beyond compute (None when it says nothing about
        the link: a pre-draft, or a response's first round); `early_lead_s` how much earlier the
        first early verdict arrived than the final one."""
        self._rounds_seen += 1
        self._rounds_total += 1
        if drafted:
            self._accepts = self.decay * self._accepts + accepted
            self._trials = self.decay * self._trials + accepted + (accepted < drafted)
        if rtt_s is not None:
            self.rtt_s.add(max(rtt_s, 0.0))
        if early_lead_s is not None:
            self.early_lead_s.add(max(early_lead_s, 0.0))
        if tokens_in_pass <= 1:
            self.observe_step(compute_s)
        else:
            per_token = self.pass_token_s.value or 0.0
            self.pass_fixed_s.add(max(compute_s - per_token * tokens_in_pass, 0.0))
            if self.step_s.value is not None:
                self.pass_token_s.add(max((compute_s - self.step_s.value) / (tokens_in_pass - 1), 0.0))
        self.gamma = self.best_gamma()

    def observe_interval(self, seconds: float, tokens: int) -> None:
        """Wall time from one final verdict to the next and the tokens it committed: what
        speculation really costs per token here, pre-drafts, queueing and all."""
        self._spent_s = self.decay * self._spent_s + seconds
        self._committed = self.decay * self._committed + tokens

    def observe_step(self, compute_s: float) -> None:
        self.step_s.add(compute_s)

    def observe_predraft(self, hit: bool) -> None:
        self.hit_rate.add(float(hit))
        if self.calibration is not None:
            return
        # few hits: ask for surer early verdicts; many: accept earlier ones
        if self.hit_rate.value < 0.6:
            self.threshold = min(0.95, self.threshold + 0.05)
        elif self.hit_rate.value > 0.85:
            self.threshold = max(0.2, self.threshold - 0.05)

    def observe_exit(self, layer: int | None, confidence: float, missed: bool) -> None:
        """An early verdict labelled by its FINAL: evidence for its exit's threshold."""
        if self.calibration is not None and layer is not None:
            self.calibration.observe(layer, confidence, missed)
            self.threshold = self._asked()

    def _asked(self) -> float:
        """The EARLYs to ask the cloud for: those trusted, and those worth an unshown pre-draft."""
        if not self.predraft_min_hit_floor:
            return self.calibration.lowest()
        return min(self.calibration.lowest(), self.calibration.predraft_threshold(self.predraft_min_hit()))

    def predraft_min_hit(self) -> float:
        """The hit rate at which an unshown pre-draft pays (module docstring), from the timings so far."""
        floor = self.predraft_min_hit_floor
        d, r, lead = self.draft_token_s.value, self.rtt_s.value, self.early_lead_s.value
        if d is None or r is None or lead is None:
            return floor
        drafting = self.gamma * d
        hit, miss = min(drafting + r, lead), max(0.0, drafting - lead)
        return max(floor, miss / (hit + miss) if hit + miss > 0 else 1.0)

    # -- decisions -------------------------------------------------------------------------------
    def trusts(self, layer: int | None, confidence: float) -> bool:
        """Whether to act on (show, pre-draft on) an early verdict of exit `layer` at `confidence`."""
        if self.calibration is None:
            return confidence >= self.threshold
        return layer is not None and self.calibration.trusts(layer, confidence)

    def predrafts_on(self, layer: int | None, confidence: float) -> bool:
        """Whether to pre-draft, without showing it, on an early verdict `trusts` refused."""
        return self.calibration is not None and layer is not None and self.use_predraft and \
            self.predraft_min_hit_floor > 0 and self.calibration.hit_rate(layer, confidence) >= self.predraft_min_hit()

    def verify_s(self, tokens: int) -> float:
        fixed = self.pass_fixed_s.value if self.pass_fixed_s.value is not None else (self.step_s.value or 0.0)
        return fixed + (self.pass_token_s.value or 0.0) * tokens

    def spec_time_per_token(self, gamma: int) -> float | None:
        if self.draft_token_s.value is None or self.rtt_s.value is None:
            return None
        drafting, verify = gamma * self.draft_token_s.value, self.verify_s(gamma + 1)
        miss = drafting + self.rtt_s.value + verify
        round_s = miss
        if self.use_predraft and self.early_lead_s.value is not None:
            hit = verify + max(0.0, drafting + self.rtt_s.value - self.early_lead_s.value)
            h = self.hit_rate.value
            round_s = h * hit + (1 - h) * miss
        return round_s / expected_tokens(self.acceptance, gamma)

    def cloud_time_per_token(self) -> float | None:
        return self.step_s.value if self.step_s.value is not None else (
            self.verify_s(1) if self.pass_fixed_s.value is not None else None)

    def best_gamma(self) -> int:
        if self._rounds_total < self.MIN_ROUNDS_FOR_GAMMA:
            return self.gamma  # too little evidence to move away from the configured draft length
        costs = {g: self.spec_time_per_token(g) for g in range(1, self.max_gamma + 1)}
        if any(c is None for c in costs.values()):
            return self.gamma
        return min(costs, key=costs.get)

    def spec_cost(self) -> float | None:
        """Measured time per token of speculation when there is some, else the model's prediction."""
        if self._committed > 0:
            return self._spent_s / self._committed
        return self.spec_time_per_token(self.best_gamma())

    def _evidence(self, rounds: int) -> float:
        """How far a cost measured on `rounds` rounds may be trusted: 1 on MIN_ROUNDS_FOR_GAMMA or
        more, less on fewer, as 1/sqrt(rounds) like the noise of a measured cost. At an acceptance
        of 0.3, three rounds that accept nothing (one time in ten) make speculation look 1.7 to 2.4
        times slower than the cloud in the Go2 and Nano regimes, where it is faster."""
        return min(1.0, math.sqrt(rounds / self.MIN_ROUNDS_FOR_GAMMA))

    def leave_margin(self) -> float:
        """How much faster cloud decoding must look to leave speculation: LEAVE_SPEC_MARGIN on a
        probe's worth of rounds, more on fewer."""
        return self.LEAVE_SPEC_MARGIN * self._evidence(self._rounds_seen)

    def choose_mode(self) -> str:
        """'cloud' or 'spec' (with early exits and pre-drafts), with a margin against flapping."""
        spec, cloud = self.spec_cost(), self.cloud_time_per_token()
        if spec is not None and cloud is not None:
            if self.mode == "spec" and cloud < self.leave_margin() * spec and self._rounds_seen >= self.MIN_ROUNDS:
                self.mode = "cloud"
            elif self.mode == "cloud" and spec < self.SWITCH_MARGIN * cloud:
                self.mode = "spec"
        return self.mode

    def start_response(self) -> str:
        """Mode for a new response. In a cloud regime, probe speculation now and then to stay current;
        each probe that confirms cloud decoding doubles the wait before the next (a probe costs a
        round or two of speculation where it loses)."""
        self.responses += 1
        mode = self.choose_mode()
        if mode == "spec":
            self._probe_wait = self.probe_every
            return mode
        self._since_probe += 1
        spec, cloud = self.spec_cost(), self.cloud_time_per_token()
        if spec is not None and cloud is not None and spec * self._evidence(self._rounds_total) > 2 * cloud:
            return mode  # far from break-even (the more so on fewer rounds): a probe would cost more than it could find
        if self._since_probe >= self._probe_wait:
            self._since_probe, self._rounds_seen = 0, 0
            self._probe_wait *= 2
            self.mode = "spec"  # the probe speculates until the evidence says otherwise
            return "spec"
        return mode
