"""Safety gate: the last word on every velocity the robot receives.

Whatever the model, parser or executor do, what leaves the gate is (a) inside the velocity clamps,
(b) within the acceleration limits relative to the previous output, (c) zero while the emergency
stop is latched, (d) zero once commands go stale (watchdog: a command is as fresh as the last word
from its source, so a plan whose producer died stops), and (e) never NaN/inf. Actions outside
the allow-list are refused before they reach the executor.

Time is passed in (`now`, seconds on a monotonic clock) rather than read, so the gate is plain,
deterministic Python that tests drive faster than real time.

The gate is passive: its owner calls `step(now)` every `period` seconds and sends the result. That
steady re-send is required by the Go2, whose firmware holds a Move for 1 s only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from spec_edge_cloud.decoding.modes import setting

from .actions import POSTURE_VERBS, VERBS, Action

# Go2 sport-mode limits (m/s, m/s, rad/s): hard bounds no configuration may exceed.
GO2_VX = (-2.5, 3.8)
GO2_VY = (-1.0, 1.0)
GO2_VYAW = (-4.0, 4.0)
ALWAYS_ALLOWED = ("stop",)  # stopping is never refused, whatever the allow-list says
# A model may move the robot by default, not change its posture: standing up and sitting down are the
# operator's (the command node's services) unless a deployment adds them to allowed_actions.
DEFAULT_ALLOWED = tuple(v for v in VERBS if v not in POSTURE_VERBS)


@dataclass(frozen=True)
class GateConfig:
    """Symmetric velocity clamps (intersected with the Go2 limits), per-axis acceleration limits,
    allowed verbs, watchdog window and output rate. Defaults are well inside the robot's limits."""

    max_vx: float = setting(1.0, "m/s, symmetric clamp on forward speed (Go2 limit: -2.5..3.8)", (0.0, 3.8))
    max_vy: float = setting(0.5, "m/s, symmetric clamp on sideways speed (Go2 limit: 1.0)", (0.0, 1.0))
    max_vyaw: float = setting(1.5, "rad/s, symmetric clamp on turning speed (Go2 limit: 4.0)", (0.0, 4.0))
    max_accel_xy: float = setting(1.5, "m/s^2, acceleration limit on vx and vy, each", (0.0, None))
    max_accel_yaw: float = setting(3.0, "rad/s^2, acceleration limit on turning", (0.0, None))
    allowed_actions: tuple[str, ...] = setting(DEFAULT_ALLOWED, "verbs a model's answer may use (stop is always "
                                                                "allowed; stand and sit only if listed)")
    watchdog_s: float = setting(0.5, "s without a token event or heartbeat from the draft node before a "
                                     "running plan is dropped and the robot stopped", (0.0, None))
    rate_hz: float = setting(20.0, "output rate; the Go2 drops a Move after 1 s, so it is re-sent this often",
                             (2.0, 1000.0))

    def __post_init__(self) -> None:
        for name, hard in (("max_vx", max(-GO2_VX[0], GO2_VX[1])), ("max_vy", GO2_VY[1]),
                           ("max_vyaw", GO2_VYAW[1]), ("max_accel_xy", math.inf),
                           ("max_accel_yaw", math.inf)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= hard):
                raise ValueError(f"{name} must be a finite number in (0, {hard}], got {v!r}")
        unknown = [v for v in self.allowed_actions if v not in VERBS]
        if unknown:
            raise ValueError(f"allowed_actions has unknown verbs {unknown} (known: {', '.join(VERBS)})")
        if not (math.isfinite(self.rate_hz) and 2.0 <= self.rate_hz <= 1000.0):
            raise ValueError(f"rate_hz must be in [2, 1000] (the Go2 drops a Move after 1 s), got {self.rate_hz!r}")
        if not (math.isfinite(self.watchdog_s) and self.watchdog_s >= 2.0 / self.rate_hz):
            raise ValueError(f"watchdog_s must be at least two output periods ({2.0 / self.rate_hz:.3f} s), "
                             f"got {self.watchdog_s!r}")

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class GateOutput:
    """What to send this tick. `stopped` means: hold still (reason: "estop", "watchdog" or "idle")."""

    vx: float
    vy: float
    vyaw: float
    stopped: bool
    reason: str = ""


class SafetyGate:
    """Clamps, rate-limits and supervises velocity commands; see the module docstring."""

    def __init__(self, config: GateConfig = GateConfig()) -> None:
        self.config = config
        self.allowed = frozenset(config.allowed_actions) | frozenset(ALWAYS_ALLOWED)
        c = config
        self._lo = (max(GO2_VX[0], -c.max_vx), max(GO2_VY[0], -c.max_vy), max(GO2_VYAW[0], -c.max_vyaw))
        self._hi = (min(GO2_VX[1], c.max_vx), min(GO2_VY[1], c.max_vy), min(GO2_VYAW[1], c.max_vyaw))
        self._accel = (c.max_accel_xy, c.max_accel_xy, c.max_accel_yaw)
        self._target = (0.0, 0.0, 0.0)
        self._output = (0.0, 0.0, 0.0)
        self._command_t: float | None = None  # time of the last accepted command
        self._step_t: float | None = None
        self._estop = False
        self.rejected_commands = 0

    def refusal(self, action: Action) -> str | None:
        """Why this action may not run (None when it may)."""
        if action.verb not in self.allowed:
            return f"action {action.verb!r} is not in the allow-list ({', '.join(sorted(self.allowed))})"
        return None

    @property
    def estopped(self) -> bool:
        return self._estop

    def set_estop(self, on: bool, now: float) -> None:
        """Latch (True) or release (False) the emergency stop. While latched every output is zero and
        commands are ignored; after release the robot stays still until a command newer than `now`.
        Setting the state it already has changes nothing."""
        if bool(on) == self._estop:
            return
        self._estop = bool(on)
        self._target = (0.0, 0.0, 0.0)
        self._command_t = None
        if on:
            self._output = (0.0, 0.0, 0.0)

    def command(self, vx: float, vy: float, vyaw: float, t: float) -> bool:
        """Offer a velocity setpoint that is fresh as of `t`: when its source (the draft node, for the
        command node) was last heard, not when a local loop replayed it; the watchdog runs from `t`.
        Returns False when it is refused: while the estop is latched, or when a value is NaN/inf (the
        target then drops to zero and the watchdog is not fed)."""
        if self._estop:
            return False
        values = (vx, vy, vyaw)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            self.rejected_commands += 1
            self._target = (0.0, 0.0, 0.0)
            return False
        self._target = tuple(min(max(float(v), lo), hi) for v, lo, hi in zip(values, self._lo, self._hi))
        self._command_t = t
        return True

    def step(self, now: float) -> GateOutput:
        """The setpoint to send now. Stops (estop, stale commands) take effect at once, without the
        acceleration limit: the robot's own controller brakes. Otherwise each axis moves towards the
        clamped target by at most accel * dt, dt capped at one period so a late tick never jumps."""
        dt = 0.0 if self._step_t is None else min(max(now - self._step_t, 0.0), self.config.period)
        self._step_t = now
        if self._estop:
            return self._stop("estop")
        if self._command_t is None:
            return self._stop("idle")
        if now - self._command_t > self.config.watchdog_s:
            return self._stop("watchdog")
        self._output = tuple(prev + min(max(target - prev, -a * dt), a * dt)
                             for prev, target, a in zip(self._output, self._target, self._accel))
        return GateOutput(*self._output, stopped=False)

    def _stop(self, reason: str) -> GateOutput:
        self._output = (0.0, 0.0, 0.0)
        return GateOutput(0.0, 0.0, 0.0, stopped=True, reason=reason)
