"""Bounded plans (issue 19, item 8): words per token event, action sentences per response and total
planned motion are capped; the excess is rejected with its reason, what fitted keeps running, and a
hostile message is refused by its size before it is read."""
import dataclasses
import json

import pytest

from spec_edge_cloud.control.actions import VERBS, MotionSpeeds
from spec_edge_cloud.control.backends import TwistBackend
from spec_edge_cloud.control.controller import Controller
from spec_edge_cloud.control.limits import PlanLimits
from spec_edge_cloud.control.safety import GateConfig, SafetyGate
from spec_edge_cloud.control.token_events import TokenEvent

CFG = GateConfig(max_vx=1.0, max_vyaw=1.5, max_accel_xy=100.0, max_accel_yaw=100.0, watchdog_s=0.5, rate_hz=20.0)
SPEEDS = MotionSpeeds(walk=0.5, strafe=0.3, turn=1.0)


def ev(kind, index=0, text="", response="r1"):
    words = tuple(text.split())
    return TokenEvent(response, kind, index, tuple(range(len(words))), words, 0.0)


def make(gate=CFG, **limits):
    sent = []
    ctl = Controller(TwistBackend(lambda *v: sent.append(v)), SafetyGate(gate), SPEEDS,
                     limits=PlanLimits(**limits))
    return ctl, sent


def stream(ctl, text, response="r1", t=0.0):
    """A response word by word, as a decoder streams it; all the records."""
    records = ctl.on_event(ev("start", response=response), t, t)
    for i, w in enumerate(text.split()):
        records += ctl.on_event(ev("final", i, w, response=response), t, t)
    return records + ctl.on_event(ev("end", len(text.split()), response=response), t, t)


def distance_driven(ctl, sent, seconds):
    """Integrate the forward twists of `seconds` of ticks (with heartbeats)."""
    metres, t = 0.0, 0.0
    while t < seconds:
        ctl.heartbeat(t)
        n = len(sent)
        ctl.tick(t)
        if len(sent) > n:
            metres += sent[-1][0] * CFG.period
        t += CFG.period
    return metres


def test_a_repeated_walk_is_capped_at_the_planned_distance():
    ctl, sent = make()  # max_distance_m 10
    text = "ball ahead . " + "walk 5.0 . " * 21  # a 64-token answer: 105 m asked for
    records = stream(ctl, text)
    actions = [r for r in records if r.kind == "action"]
    rejected = [r for r in records if r.kind == "rejected"]
    assert [r.action for r in actions] == ["walk 5.0", "walk 5.0"]
    assert len(rejected) == 1 and "15.0 m of distance" in rejected[0].reason
    assert "rest of the response is ignored" in rejected[0].reason
    assert distance_driven(ctl, sent, 25.0) == pytest.approx(10.0, abs=0.05)


@pytest.mark.parametrize("text, limits, fits, why", [
    ("turn left 180 . " * 6, {}, 4, "900.0 deg of turning"),
    ("strafe left 3.0 . back 3.0 . walk 3.0 . strafe right 3.0 .", {}, 3, "12.0 m of distance"),
    ("turn left 90 . " * 20, dict(max_turn_deg=10000), 16, "more than 16 action sentences"),
    ("walk 2.0 . " * 5, dict(max_time_s=9.0), 2, "12.0 s of motion time"),
    ("sit . stand . " * 3, dict(max_time_s=9.0), 4, "10.0 s of motion time"),  # 2 s holds
])
def test_each_limit_rejects_the_excess_and_keeps_what_fitted(text, limits, fits, why):
    ctl, _ = make(dataclasses.replace(CFG, allowed_actions=VERBS), **limits)  # postures allowed too
    records = stream(ctl, "box . " + text)
    assert sum(r.kind == "action" for r in records) == fits
    assert records[-1].kind == "rejected" and why in records[-1].reason
    assert not ctl.executor.idle  # what fitted runs


def test_limits_count_per_response():
    ctl, _ = make()
    stream(ctl, "ball . walk 5.0 . walk 5.0 .")
    records = stream(ctl, "ball . walk 5.0 . walk 5.0 .", response="r2")  # a new response: a new budget
    assert [r.kind for r in records] == ["observation", "action", "action"]


def test_a_million_word_message_is_refused_unread_and_the_plan_goes_on():
    ctl, sent = make()
    stream(ctl, "ball . walk 5.0 .")
    words = ["walk", "5.0", "."] * 333_334
    big = json.dumps({"response": "r1", "kind": "final", "index": 5, "tokens": list(range(len(words))),
                      "words": words, "t": 0.0, "capture_t": None})
    (rec,) = ctl.on_message(big, 0.1)
    assert rec.kind == "rejected" and rec.response == "r1" and "refused unread" in rec.reason
    assert not ctl.executor.idle  # the verified plan so far keeps running
    assert ctl.on_message("{", 0.2)[0].reason.startswith("malformed token event")
    # a smaller message over max_event_words is read, then refused: a gap would follow, so it stops
    (rec,) = ctl.on_message(json.dumps({"response": "r1", "kind": "final", "index": 5, "tokens": list(range(300)),
                                        "words": ["left"] * 300, "t": 0.0}), 0.3)
    assert "300 words, over max_event_words 256" in rec.reason and ctl.executor.idle


def test_limits_are_checked():
    for bad in (dict(max_event_words=0), dict(max_actions=True), dict(max_distance_m=float("inf")),
                dict(max_turn_deg=-1.0), dict(max_time_s=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PlanLimits(**bad)
