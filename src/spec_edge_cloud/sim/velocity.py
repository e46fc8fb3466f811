"""The velocity interface of the simulated Go2, shaped like the real robot's sport mode.

`set(vx, vy, vyaw)` is fire-and-forget: the command holds for COMMAND_HOLD_S of simulated time and
then the robot stops, as the Go2 firmware treats Move(). Commands are clamped to the range the
walking policy was trained on and ramped at a bounded acceleration.

The policy alone does not walk straight: standing still it turns left at about 8 deg/s and walking
at 0.5 m/s it slides sideways (docs/sim.md has the measurements). The real robot's sport mode
closes the loop on its state estimate; here an integral trim on the body velocity error does the
same. Integrating the velocity error is integrating the pose error in the heading frame, so the
trim holds heading when no turn is asked for and makes up distance lost while accelerating: an
open-loop sequence of commands ends where the commanded twist integrates to.
"""
from __future__ import annotations

import math

import numpy as np

COMMAND_HOLD_S = 1.0
VELOCITY_LIMITS = np.array([1.0, 0.5, 1.5])        # |vx| m/s, |vy| m/s, |vyaw| rad/s
ACCELERATION_LIMITS = np.array([2.0, 1.5, 4.0])    # per second
TRIM_GAIN = np.array([6.0, 6.0, 9.0])              # 1/s: trim rate per unit velocity error (tuned: docs/sim.md)
TRIM_LIMITS = np.array([0.4, 0.3, 0.6])


class VelocityInterface:
    """Command in, policy command out: hold, clamp, ramp and trim (all in the heading frame)."""

    def __init__(self, trim: bool = True) -> None:
        self.trim_gain = TRIM_GAIN if trim else np.zeros(3)  # no trim: the bare policy, for measuring
        self.reset()

    def reset(self) -> None:
        self._target = np.zeros(3)
        self._expires = -math.inf
        self._ramped = np.zeros(3)
        self._trim = np.zeros(3)

    def set(self, vx: float, vy: float, vyaw: float, now: float) -> np.ndarray:
        """Hold (vx, vy, vyaw) from `now` for COMMAND_HOLD_S; returns the clamped command."""
        command = np.array([vx, vy, vyaw], dtype=np.float64)
        if not np.all(np.isfinite(command)):
            raise ValueError(f"velocity command must be finite, got {command.tolist()}")
        self._target = np.clip(command, -VELOCITY_LIMITS, VELOCITY_LIMITS)
        self._expires = now + COMMAND_HOLD_S
        return self._target.copy()

    def stop(self) -> None:
        self._target = np.zeros(3)
        self._expires = -math.inf

    def desired(self, now: float) -> np.ndarray:
        """The command in force at `now`: the last one while it holds, else zero."""
        return self._target.copy() if now < self._expires else np.zeros(3)

    def policy_command(self, now: float, measured: np.ndarray, dt: float) -> np.ndarray:
        """What to tell the walking policy this tick, given the measured body twist."""
        desired = self.desired(now)
        step = ACCELERATION_LIMITS * dt
        self._ramped += np.clip(desired - self._ramped, -step, step)
        self._trim = np.clip(self._trim + self.trim_gain * (desired - measured) * dt,
                             -TRIM_LIMITS, TRIM_LIMITS)
        return self._ramped + self._trim
