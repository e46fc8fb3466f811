"""Plan limits: how much one response may ask of the robot.

A model's answer is text from a network peer and a model that can loop, so its size is bounded
where it enters: words per token event (a larger event is refused before it is parsed, by its
byte size first), action sentences per response, and the motion one response plans in total
(distance, turning, time). What goes past a limit is rejected, with the reason, and the rest of
that response is ignored; what fitted keeps running. Every check is constant work per word, so
no message holds the control loop for longer than it takes to read its length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from spec_edge_cloud.decoding.modes import setting

from .actions import DISTANCE_VERBS, LATERAL_VERBS, POSTURE_VERBS, TURN_VERBS, Action, MotionSpeeds, action_segments

# A token event of n words is at most this many bytes of JSON: a word-level token is short, so a
# larger message cannot hold n words of the vocabulary and is refused unread.
EVENT_BYTES_PER_WORD = 96
EVENT_BYTES_OVERHEAD = 1024


@dataclass(frozen=True)
class PlanLimits:
    """Caps on one response: words per token event, action sentences, and planned motion."""

    max_event_words: int = setting(256, "words one token event may carry (a larger message is refused unread)",
                                   (1, None))
    max_actions: int = setting(16, "action sentences per response; past it the rest of the response is ignored",
                               (1, None))
    max_distance_m: float = setting(10.0, "m of walk + back + strafe one response may plan", (0.0, None))
    max_turn_deg: float = setting(720.0, "degrees of turning one response may plan", (0.0, None))
    max_time_s: float = setting(60.0, "s of motion and posture holds one response may plan", (0.0, None))

    def __post_init__(self) -> None:
        for name in ("max_event_words", "max_actions"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("max_distance_m", "max_turn_deg", "max_time_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")

    @property
    def max_event_bytes(self) -> int:
        return EVENT_BYTES_OVERHEAD + EVENT_BYTES_PER_WORD * self.max_event_words


class PlanBudget:
    """What one response has planned so far; `charge` each action sentence before it is queued."""

    def __init__(self, limits: PlanLimits, speeds: MotionSpeeds, posture_hold_s: float) -> None:
        self.limits = limits
        self.speeds = speeds
        self.posture_hold_s = posture_hold_s
        self.reset()

    def reset(self) -> None:
        """A new response: nothing planned yet."""
        self.sentences = 0
        self.distance_m = 0.0
        self.turn_deg = 0.0
        self.time_s = 0.0

    def count_sentence(self) -> str | None:
        """Count one sentence after the observation; why it is one too many, or None."""
        self.sentences += 1
        if self.sentences > self.limits.max_actions:
            return f"more than {self.limits.max_actions} action sentences in one response (max_actions)"
        return None

    def charge(self, action: Action) -> str | None:
        """Add `action` to the plan if it fits every limit (None), else say which it would exceed."""
        lim = self.limits
        distance = action.amount if action.verb in DISTANCE_VERBS + LATERAL_VERBS else 0.0
        turn = action.amount if action.verb in TURN_VERBS else 0.0
        if action.verb in POSTURE_VERBS:
            duration = self.posture_hold_s
        else:
            duration = sum(s.duration for s in action_segments(action, self.speeds))
        for total, add, cap, what, unit in ((self.distance_m, distance, lim.max_distance_m, "distance", "m"),
                                            (self.turn_deg, turn, lim.max_turn_deg, "turning", "deg"),
                                            (self.time_s, duration, lim.max_time_s, "motion time", "s")):
            if total + add > cap + 1e-9:
                return (f"the response would plan {total + add:.1f} {unit} of {what}, over its limit "
                        f"of {cap:g} {unit}")
        self.distance_m += distance
        self.turn_deg += turn
        self.time_s += duration
        return None
