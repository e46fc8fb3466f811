"""Controller: token events in, backend calls out. Parser + safety gate + executor, wired once.

This is everything the ROS command node does, minus ROS, so it runs and is tested as plain Python
with injected time. Per response: "start" drops the old plan (a new answer replaces it); final
words go through the incremental parser; each complete action is checked against the gate's
allow-list and the response's plan limits (control/limits.py) and queued on the executor at once,
so the robot moves while decoding continues. "provisional" and "rollback" never move the robot;
"unverified" words count only when `act_on_unverified` is set. Every control tick the executor's
setpoint passes through the gate, and the gate's output goes to the backend.

Liveness: a plan is only as fresh as its source. Every token event and every heartbeat of the
draft node (`heartbeat(now)`) renews it; the gate's watchdog runs from that time, so when the
draft node dies or hangs the robot stops within `watchdog_s` and the plan is dropped, even in the
middle of a long action. The e-stop publisher may have to prove it is alive too (`estop_timeout_s`,
twist_mux lock semantics): silent for longer than that, the robot is held still until it speaks
again. A pressed e-stop damps a Go2 (`backend.estop_damps`): the robot then moves again only after
an operator stands it up (`operator_posture("stand")`), never on a model's word. By default a model
may not change the robot's posture at all (GateConfig.allowed_actions).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

from .actions import Action, MotionSpeeds
from .backends import Backend
from .executor import POSTURE_HOLD_S, Executor
from .limits import PlanBudget, PlanLimits
from .parser import ActionReady, IncrementalParser, Observation, Rejected
from .safety import GateOutput, SafetyGate
from .token_events import TokenEvent, parse_token_event

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
                 act_on_unverified: bool = False, posture_hold_s: float = POSTURE_HOLD_S,
                 limits: PlanLimits = PlanLimits(), estop_timeout_s: float = 0.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not (math.isfinite(estop_timeout_s) and estop_timeout_s >= 0):
            raise ValueError(f"estop_timeout_s must be a finite number >= 0 (0: no e-stop heartbeat), "
                             f"got {estop_timeout_s!r}")
        self.backend = backend
        self.gate = gate
        self.executor = Executor(speeds, posture_hold_s)
        self.parser = IncrementalParser()
        self.limits = limits
        self.budget = PlanBudget(limits, speeds, posture_hold_s)
        self.act_on_unverified = act_on_unverified
        self.estop_timeout_s = estop_timeout_s
        self._wall = wall_clock
        self._response: str | None = None  # the response being acted on; None: ignore events
        self._next_index = 0  # position in the response of the next word the parser expects
        self._alive_t: float | None = None  # when the draft node was last heard (event or heartbeat)
        self._estop_heard_t: float | None = None  # when the e-stop publisher last spoke
        self._estop_pressed = False  # latched by a True on /estop (not by the publisher's silence)
        self.needs_stand = False  # damped by an e-stop: only an operator's stand moves it again
        self.watchdog_stops = 0
        self._notices: list[ActionRecord] = []

    # -- inputs ------------------------------------------------------------------------------------
    def on_message(self, data: str, now: float) -> list[ActionRecord]:
        """One raw /spec/tokens message: refused unread when larger than `max_event_words` words can
        be, refused when malformed (both reported against the response being acted on), else handled."""
        if len(data) > self.limits.max_event_bytes:
            return [self._refusal(f"token event of {len(data)} bytes refused unread: more than "
                                  f"{self.limits.max_event_words} words cannot take that much (max_event_words)")]
        try:
            event = parse_token_event(data)
        except ValueError as e:
            return [self._refusal(f"malformed token event: {e}")]
        return self.on_event(event, now, self._wall())

    def on_event(self, event: TokenEvent, now: float, wall: float) -> list[ActionRecord]:
        """Handle one token event at monotonic time `now` (wall: time.time(), for the records)."""
        self._alive_t = now
        if event.kind == "start":
            self._drop_response()
            self.executor.clear()
            self._response, self._next_index = event.response, 0
            return []
        if event.response != self._response or event.kind in ("provisional", "rollback"):
            return []
        if len(event.words) > self.limits.max_event_words:
            self._drop_response()
            self.executor.clear()
            reason = (f"token event of {len(event.words)} words, over max_event_words "
                      f"{self.limits.max_event_words}: plan and the rest of the response dropped")
            return [self._record(event, Rejected("", reason), wall)]
        if event.kind == "end":
            return self._records(event, self.parser.finish(), now, wall)
        return self._feed(event, event.kind == "final" or self.act_on_unverified, now, wall)

    def heartbeat(self, now: float) -> None:
        """The draft node is alive (it sends these while it works): the plan stays fresh."""
        self._alive_t = now

    def set_estop(self, on: bool, now: float) -> None:
        """A message from the e-stop publisher: latch (True) or release (False) the emergency stop.
        Either way the plan and the current response are dropped (including one that started while
        latched): after a release the robot waits for a new response. A repeated state (a late-joining
        node hearing the latched "released", or a heartbeat) only proves the publisher alive. A press
        damps a robot whose backend does so; it stays down until an operator stands it up."""
        self._estop_heard_t = now
        on = bool(on)
        if on == self._estop_pressed and on == self.gate.estopped:
            return
        self._estop_pressed = on
        if on and self.backend.estop_damps:
            self.needs_stand = True
        self._latch(on, now)

    def operator_posture(self, verb: str) -> str | None:
        """An operator's stand or sit (the node's services): drops the plan and the response and sends
        the posture to the backend now. Returns why it is refused, or None. Standing is the only way
        out of the damping an e-stop left; a model's "stand" never is."""
        if verb not in ("stand", "sit"):
            raise ValueError(f"operator posture must be 'stand' or 'sit', got {verb!r}")
        if self.gate.estopped:
            return "the e-stop is latched: release it first"
        if verb == "sit" and self.needs_stand:
            return "the robot is damped after an e-stop: stand it up first"
        self._drop_response()
        self.executor.clear()
        if verb == "stand":
            self.backend.stand()
            self.needs_stand = False
        else:
            self.backend.sit()
        return None

    # -- the control period ------------------------------------------------------------------------
    def tick(self, now: float) -> GateOutput:
        """One control period: executor setpoint -> gate -> backend. Commands are as fresh as the last
        word from the draft node: when that is older than the watchdog, the plan is dropped."""
        self._check_estop_publisher(now)
        sp = self.executor.tick(now)
        if not self.gate.estopped:
            for posture in sp.postures:
                if posture == "stand":
                    self.backend.stand()
                else:
                    self.backend.sit()
        if self._alive_t is not None:
            self.gate.command(sp.vx, sp.vy, sp.vyaw, self._alive_t)
        out = self.gate.step(now)
        if out.reason == "watchdog" and not self.executor.idle:
            self.watchdog_stops += 1
            self._notices.append(self._refusal(
                f"watchdog: no token event or heartbeat from the draft node for {now - self._alive_t:.2f} s "
                f"(watchdog_s {self.gate.config.watchdog_s:g}): plan dropped, robot stopped"))
            self.executor.clear()
            self._drop_response()
        if out.reason == "estop":
            if self._estop_pressed:
                self.backend.estop()
            else:
                self.backend.stop()  # held by a silent e-stop publisher: stop, do not damp
        elif out.stopped or sp.vx == sp.vy == sp.vyaw == out.vx == out.vy == out.vyaw == 0.0:
            self.backend.stop()  # nothing to do and already braked to zero: a stop, not a zero Move
        else:
            self.backend.move(out.vx, out.vy, out.vyaw)
        return out

    def take_notices(self) -> list[ActionRecord]:
        """Decisions made by ticks rather than by events (a watchdog stop, a silent e-stop), oldest first."""
        notices, self._notices = self._notices, []
        return notices

    def status(self) -> dict[str, str]:
        """What an operator needs to see (the node publishes it on /diagnostics)."""
        estop = "pressed" if self._estop_pressed else "silent publisher" if self.gate.estopped else "released"
        return {"estop": estop, "needs_stand": str(self.needs_stand).lower(),
                "plan": "idle" if self.executor.idle else "running", "response": self._response or "",
                "watchdog_stops": str(self.watchdog_stops)}

    # -- internals ---------------------------------------------------------------------------------
    def _check_estop_publisher(self, now: float) -> None:
        """twist_mux lock semantics: with estop_timeout_s set, a publisher silent for longer (or never
        heard) holds the robot still, as a pressed e-stop would, until its next message."""
        if self.estop_timeout_s <= 0 or self.gate.estopped:
            return
        heard = self._estop_heard_t
        if heard is not None and now - heard <= self.estop_timeout_s:
            return
        silence = "never heard" if heard is None else f"silent for {now - heard:.2f} s"
        self._notices.append(self._refusal(
            f"e-stop publisher {silence} (estop_timeout_s {self.estop_timeout_s:g}): robot held still "
            f"until it publishes again"))
        self._latch(True, now)

    def _latch(self, on: bool, now: float) -> None:
        if on == self.gate.estopped:
            return
        self.gate.set_estop(on, now)
        self.executor.clear()
        self._drop_response()

    def _drop_response(self) -> None:
        self.parser.reset()
        self.budget.reset()
        self._response = None

    def _feed(self, event: TokenEvent, verified: bool, now: float, wall: float) -> list[ActionRecord]:
        """Feed the words of a final/unverified event from the position the parser has reached."""
        if event.index > self._next_index:
            # a lost message: what follows cannot be parsed safely, so drop the rest of the response
            self._drop_response()
            self.executor.clear()
            reason = f"gap in final tokens: expected index {self._next_index}, got {event.index}"
            return [self._record(event, Rejected(" ".join(event.words), reason), wall)]
        skip = self._next_index - event.index  # words already fed (a duplicate or overlapping event)
        parsed = []
        for word in event.words[skip:]:
            parsed.extend(self.parser.feed(word, verified=verified))
        self._next_index = max(self._next_index, event.index + len(event.words))
        return self._records(event, parsed, now, wall)

    def _records(self, event: TokenEvent, parsed: list, now: float, wall: float) -> list[ActionRecord]:
        """Records of what the parser produced; an action that fits is queued. Past a plan limit the
        rest of the response is ignored, while what fitted keeps running."""
        records = []
        for p in parsed:
            over = None
            if not isinstance(p, Observation):
                over = self.budget.count_sentence()
            if over is None and isinstance(p, ActionReady):
                reason = self._refusal_of(p.action)
                if reason is None:
                    over = self.budget.charge(p.action)
                if reason is None and over is None:
                    self.executor.push(p.action, now)
                elif reason is not None:
                    p = Rejected(p.sentence, reason)
            if over is not None:
                records.append(self._record(event, Rejected(p.sentence, f"{over}: the rest of the response "
                                                                        f"is ignored"), wall))
                self._drop_response()
                break
            records.append(self._record(event, p, wall))
        return records

    def _refusal_of(self, action: Action) -> str | None:
        """Why a model's action may not be queued now (None: it may)."""
        reason = self.gate.refusal(action)
        if reason is None and self.gate.estopped:
            reason = "emergency stop latched: actions are ignored until it is released"
        if reason is None and self.needs_stand:
            reason = ("the robot was damped by an e-stop: an operator must stand it up "
                      "(the command node's stand service) before it acts again")
        return reason

    @staticmethod
    def _record(event: TokenEvent, p, wall: float) -> ActionRecord:
        if isinstance(p, Observation):
            return ActionRecord(event.response, "observation", p.text, None, None, wall, event.t, event.capture_t)
        if isinstance(p, ActionReady):
            return ActionRecord(event.response, "action", p.sentence, str(p.action), None, wall, event.t,
                                event.capture_t)
        return ActionRecord(event.response, "rejected", p.sentence, None, p.reason, wall, event.t, event.capture_t)

    def _refusal(self, reason: str) -> ActionRecord:
        """A record of a decision no single event completed, against the response being acted on."""
        wall = self._wall()
        return ActionRecord(self._response or "", "rejected", "", None, reason, wall, wall, None)
