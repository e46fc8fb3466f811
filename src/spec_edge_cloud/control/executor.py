"""Action executor: a queue of actions played back as time-indexed velocity setpoints.

Actions arrive one by one while the answer is still being decoded; each runs open loop for the
time its segment needs (distance / speed), then the next begins. Consecutive actions are chained
on the plan's own clock (the next starts when the previous ends, not at the next tick), so tick
jitter does not stretch distances. `stand`/`sit` are posture commands: they are handed out once,
in order, followed by a still hold so the robot can finish changing posture before moving again.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .actions import POSTURE_VERBS, Action, MotionSpeeds, Segment, action_segments

POSTURE_HOLD_S = 2.0  # a Go2 needs about this long to stand up or sit down


@dataclass(frozen=True)
class Setpoint:
    """What the executor wants now: a body twist, and postures to issue this tick (in order)."""

    vx: float = 0.0
    vy: float = 0.0
    vyaw: float = 0.0
    postures: tuple[str, ...] = ()
    action: Action | None = None  # the action whose segment is running, None when idle


@dataclass(frozen=True)
class _Step:
    action: Action
    segment: Segment  # for a posture: a zero twist held for the posture time
    posture: str | None


class Executor:
    """`push` actions as they are parsed, `tick(now)` at the control rate, `clear()` to drop the plan."""

    def __init__(self, speeds: MotionSpeeds = MotionSpeeds(), posture_hold_s: float = POSTURE_HOLD_S) -> None:
        if not (math.isfinite(posture_hold_s) and posture_hold_s >= 0):
            raise ValueError(f"posture_hold_s must be a finite number >= 0, got {posture_hold_s!r}")
        self.speeds = speeds
        self.posture_hold_s = posture_hold_s
        self._queue: deque[_Step] = deque()
        self._current: _Step | None = None
        self._started = 0.0  # plan-clock start of the current step
        self._free_at = 0.0  # plan-clock time at which the next step may start

    @property
    def idle(self) -> bool:
        return self._current is None and not self._queue

    def push(self, action: Action, now: float) -> None:
        """Append an action to the plan; it starts right away when nothing else is running."""
        if self.idle:
            self._free_at = now  # a plan that ran dry restarts now, not back when its last step ended
        if action.verb in POSTURE_VERBS:
            self._queue.append(_Step(action, Segment(0.0, 0.0, 0.0, self.posture_hold_s), action.verb))
        else:
            self._queue.extend(_Step(action, s, None) for s in action_segments(action, self.speeds))

    def clear(self) -> None:
        """Drop the whole plan (new response, emergency stop): the next tick is a zero twist."""
        self._queue.clear()
        self._current = None

    def tick(self, now: float) -> Setpoint:
        postures: list[str] = []
        while True:
            if self._current is None:
                if not self._queue:
                    return Setpoint(postures=tuple(postures))
                self._current = self._queue.popleft()
                self._started = self._free_at
                if self._current.posture is not None:
                    postures.append(self._current.posture)
            end = self._started + self._current.segment.duration
            if now < end:
                s = self._current.segment
                return Setpoint(s.vx, s.vy, s.vyaw, tuple(postures), self._current.action)
            self._free_at = end
            self._current = None
