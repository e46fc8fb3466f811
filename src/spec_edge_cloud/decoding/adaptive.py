"""Online choice of draft length, exit threshold and mode, from what the robot measures.

Cost model (DESIGN.md, "When speculation across a link pays"): cloud decoding costs the target's
step time t per token; a speculative round costs γ·d (drafting) + R (round trip) + V(γ+1)
(verification) and commits E(a, γ) = (1 - a^(γ+1)) / (1 - a) tokens at acceptance a. Pick the γ
that minimises time per token; pick cloud decoding when even the best γ loses to t. Estimates are
exponentially weighted, so the choice follows a changing link or a loaded server.
"""
from __future__ import annotations


def expected_tokens(a: float, gamma: int) -> float:
    a = min(max(a, 0.0), 0.999)
    return (1 - a ** (gamma + 1)) / (1 - a)


class _Ewma:
    def __init__(self, alpha: float = 0.3, value: float | None = None):
        self.alpha, self.value = alpha, value

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


class AdaptiveController:
    def __init__(self, gamma: int = 4, max_gamma: int = 8, threshold: float = 0.5, probe_every: int = 8):
        self.gamma, self.max_gamma, self.threshold = gamma, max_gamma, threshold
        self.acceptance = _Ewma(0.2, 0.6)
        self.draft_token_s = _Ewma()
        self.rtt_s = _Ewma()
        self.pass_fixed_s = _Ewma()    # verification time = fixed + per_token * tokens
        self.pass_token_s = _Ewma(value=0.0)
        self.step_s = _Ewma()
        self.hit_rate = _Ewma(0.2, 0.7)
        self.use_predraft = True
        self.responses = 0
        self.probe_every = probe_every

    # -- observations ----------------------------------------------------------------------------
    def observe_draft(self, seconds: float, tokens: int) -> None:
        if tokens:
            self.draft_token_s.add(seconds / tokens)

    def observe_round(self, drafted: int, accepted: int, compute_s: float, tokens_in_pass: int,
                      rtt_s: float | None) -> None:
        if drafted:
            self.acceptance.add(accepted / drafted)
        if rtt_s is not None:
            self.rtt_s.add(max(rtt_s, 0.0))
        if tokens_in_pass <= 1:
            self.observe_step(compute_s)
        else:
            per_token = self.pass_token_s.value or 0.0
            self.pass_fixed_s.add(max(compute_s - per_token * tokens_in_pass, 0.0))
            if self.step_s.value is not None:
                self.pass_token_s.add(max((compute_s - self.step_s.value) / (tokens_in_pass - 1), 0.0))
        self.gamma = self.best_gamma()

    def observe_step(self, compute_s: float) -> None:
        self.step_s.add(compute_s)

    def observe_predraft(self, hit: bool) -> None:
        self.hit_rate.add(float(hit))
        # few hits: ask for surer early verdicts; many: accept earlier ones
        if self.hit_rate.value < 0.6:
            self.threshold = min(0.95, self.threshold + 0.05)
        elif self.hit_rate.value > 0.85:
            self.threshold = max(0.2, self.threshold - 0.05)

    # -- decisions -------------------------------------------------------------------------------
    def verify_s(self, tokens: int) -> float:
        fixed = self.pass_fixed_s.value if self.pass_fixed_s.value is not None else (self.step_s.value or 0.0)
        return fixed + (self.pass_token_s.value or 0.0) * tokens

    def spec_time_per_token(self, gamma: int) -> float | None:
        if self.draft_token_s.value is None or self.rtt_s.value is None:
            return None
        round_s = gamma * self.draft_token_s.value + self.rtt_s.value + self.verify_s(gamma + 1)
        return round_s / expected_tokens(self.acceptance.value, gamma)

    def cloud_time_per_token(self) -> float | None:
        return self.step_s.value if self.step_s.value is not None else (
            self.verify_s(1) if self.pass_fixed_s.value is not None else None)

    def best_gamma(self) -> int:
        costs = {g: self.spec_time_per_token(g) for g in range(1, self.max_gamma + 1)}
        if any(c is None for c in costs.values()):
            return self.gamma
        return min(costs, key=costs.get)

    def choose_mode(self) -> str:
        """'cloud' when plain cloud decoding is predicted faster, else 'spec' (with early exits)."""
        spec, cloud = self.spec_time_per_token(self.best_gamma()), self.cloud_time_per_token()
        if spec is None or cloud is None:
            return "spec"
        return "cloud" if cloud < spec else "spec"

    def start_response(self) -> str:
        """Mode for a new response; in a cloud regime, probe speculation now and then to stay current."""
        self.responses += 1
        mode = self.choose_mode()
        if mode == "cloud" and self.responses % self.probe_every == 0:
            return "spec"
        return mode
