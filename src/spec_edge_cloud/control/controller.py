"""Controller: token events in, backend calls out. Parser + safety gate + executor, wired once.

This is everything the ROS command node does, minus ROS, so it runs and is tested as plain Python
with injected time. Per response: "start" drops the old plan (a new answer replaces it); final
words go through the incremental parser; each complete action is checked against the gate's
allow-list and queued on the executor at once, so the robot moves while decoding continues.
"provisional" and "rollback" never move the robot; "unverified" words count only when
`act_on_unverified` is set. Every control tick the executor's setpoint passes through the gate,
and the gate's output goes to the backend.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .actions import MotionSpeeds
from .backends import Backend
from .executor import POSTURE_HOLD_S, Executor
from .parser import ActionReady, IncrementalParser, Observation, Rejected
from .safety import GateOutput, SafetyGate
from .token_events import TokenEvent


@dataclass(frozen=True)
class ActionRecord:
    """One parsed sentence, as published on /spec/actions (benchmarks take TTFA from these).

    kind: "observation", "action" (queued for execution) or "rejected" (never executed).
    t: wall-clock time it was decided; token_t / capture_t: from the token event that completed it."""

    response: str
    kind: str
    sentence: str
    action: str | None
    reason: str | None
    t: float
    token_t: float
    capture_t: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class Controller:
    def __init__(self, backend: Backend, gate: SafetyGate, speeds: MotionSpeeds = MotionSpeeds(),
                 act_on_unverified: bool = False, posture_hold_s: float = POSTURE_HOLD_S) -> None:
        self.backend = backend
        self.gate = gate
        self.executor = Executor(speeds, posture_hold_s)
        self.parser = IncrementalParser()
        self.act_on_unverified = act_on_unverified
        self._response: str | None = None  # the response being acted on; None: ignore events
        self._next_index = 0  # position in the response of the next word the parser expects

    def on_event(self, event: TokenEvent, now: float, wall: float) -> list[ActionRecord]:
        """Handle one token event at monotonic time `now` (wall: time.time(), for the records)."""
        if event.kind == "start":
            self.parser.reset()
            self.executor.clear()
            self._response, self._next_index = event.response, 0
            return []
        if event.response != self._response or event.kind in ("provisional", "rollback"):
            return []
        if event.kind == "end":
            return self._records(event, self.parser.finish(), now, wall)
        return self._feed(event, event.kind == "final" or self.act_on_unverified, now, wall)

    def set_estop(self, on: bool, now: float) -> None:
        """Latch or release the emergency stop. Either way the plan and the current response are
        dropped (including one that started while latched): after a release the robot waits for a new
        response. A repeated state (a late-joining node hearing the latched "released") changes nothing."""
        if bool(on) == self.gate.estopped:
            return
        self.gate.set_estop(on, now)
        self.executor.clear()
        self.parser.reset()
        self._response = None

    def tick(self, now: float) -> GateOutput:
        """One control period: executor setpoint -> gate -> backend."""
        sp = self.executor.tick(now)
        if not self.gate.estopped:
            for posture in sp.postures:
                if posture == "stand":
                    self.backend.stand()
                else:
                    self.backend.sit()
        self.gate.command(sp.vx, sp.vy, sp.vyaw, now)
        out = self.gate.step(now)
        if out.reason == "estop":
            self.backend.estop()
        elif out.stopped or sp.vx == sp.vy == sp.vyaw == out.vx == out.vy == out.vyaw == 0.0:
            self.backend.stop()  # nothing to do and already braked to zero: a stop, not a zero Move
        else:
            self.backend.move(out.vx, out.vy, out.vyaw)
        return out

    def _feed(self, event: TokenEvent, verified: bool, now: float, wall: float) -> list[ActionRecord]:
        """Feed the words of a final/unverified event from the position the parser has reached."""
        if event.index > self._next_index:
            # a lost message: what follows cannot be parsed safely, so drop the rest of the response
            self._response = None
            self.executor.clear()
            self.parser.reset()
            reason = f"gap in final tokens: expected index {self._next_index}, got {event.index}"
            return self._records(event, [Rejected(" ".join(event.words), reason)], now, wall)
        skip = self._next_index - event.index  # words already fed (a duplicate or overlapping event)
        parsed = []
        for word in event.words[skip:]:
            parsed.extend(self.parser.feed(word, verified=verified))
        self._next_index = max(self._next_index, event.index + len(event.words))
        return self._records(event, parsed, now, wall)

    def _records(self, event: TokenEvent, parsed: list, now: float, wall: float) -> list[ActionRecord]:
        records = []
        for p in parsed:
            kind, sentence, action, reason = "rejected", "", None, None
            if isinstance(p, Observation):
                kind, sentence = "observation", p.text
            elif isinstance(p, Rejected):
                sentence, reason = p.sentence, p.reason
            elif isinstance(p, ActionReady):
                sentence, reason = p.sentence, self.gate.refusal(p.action)
                if reason is None and self.gate.estopped:
                    reason = "emergency stop latched: actions are ignored until it is released"
                if reason is None:
                    self.executor.push(p.action, now)
                    kind, action = "action", str(p.action)
            records.append(ActionRecord(event.response, kind, sentence, action, reason, wall, event.t,
                                        event.capture_t))
        return records
