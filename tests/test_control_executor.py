"""Executor timing and the controller's handling of responses, estops and token-event order."""
import json
import math

import pytest

from spec_edge_cloud.control.actions import MotionSpeeds, parse_action
from spec_edge_cloud.control.backends import TwistBackend
from spec_edge_cloud.control.controller import Controller
from spec_edge_cloud.control.executor import Executor
from spec_edge_cloud.control.safety import GateConfig, SafetyGate
from spec_edge_cloud.control.token_events import TokenEvent, parse_token_event

SPEEDS = MotionSpeeds(walk=0.5, strafe=0.25, turn=1.0)


def test_actions_chain_on_the_plan_clock():
    ex = Executor(SPEEDS, posture_hold_s=1.0)
    ex.push(parse_action("walk 1.0"), now=10.0)  # 2 s
    ex.push(parse_action("turn left 90"), now=10.5)  # pi/2 s
    ex.push(parse_action("sit"), now=10.5)  # 1 s hold
    ex.push(parse_action("strafe right 0.5"), now=10.5)  # 2 s
    assert ex.tick(10.0).vx == 0.5 and ex.tick(10.0).action == parse_action("walk 1.0")
    assert ex.tick(11.99).vx == 0.5
    turn = ex.tick(12.0 + 0.01)
    assert (turn.vx, turn.vyaw) == (0.0, 1.0)
    t_sit = 12.0 + math.pi / 2
    sit = ex.tick(t_sit + 0.3)  # a late tick: the posture is still issued, exactly once
    assert sit.postures == ("sit",) and (sit.vx, sit.vyaw) == (0.0, 0.0)
    assert ex.tick(t_sit + 0.5).postures == ()
    assert ex.tick(t_sit + 1.01).vy == -0.25  # strafing starts when the hold ends, not at a tick
    assert ex.tick(t_sit + 3.01).action is None and ex.idle


def test_a_plan_that_ran_dry_restarts_when_the_next_action_arrives():
    ex = Executor(SPEEDS)
    ex.push(parse_action("walk 0.5"), now=0.0)  # 1 s
    assert ex.tick(0.5).vx == 0.5 and ex.tick(3.0).vx == 0.0
    ex.push(parse_action("back 0.5"), now=5.0)
    assert ex.tick(5.9).vx == -0.5 and ex.tick(6.01).vx == 0.0


def test_stop_ends_motion_and_clear_drops_the_plan():
    ex = Executor(SPEEDS)
    for a in ("walk 5.0", "stop"):
        ex.push(parse_action(a), now=0.0)
    assert ex.tick(9.99).vx == 0.5 and ex.tick(10.0).vx == 0.0 and ex.idle
    ex.push(parse_action("walk 5.0"), now=20.0)
    ex.clear()
    assert ex.tick(20.1).vx == 0.0 and ex.idle


def ev(kind, index=0, text="", response="r1", t=100.0, capture_t=99.0):
    words = tuple(text.split())
    return TokenEvent(response, kind, index, tuple(range(len(words))), words, t, capture_t)


def make_controller(**kw):
    sent = []
    gate = SafetyGate(GateConfig(max_vx=1.0, max_accel_xy=100.0, max_accel_yaw=100.0, watchdog_s=0.5))
    return Controller(TwistBackend(lambda *v: sent.append(v)), gate, SPEEDS, **kw), sent


def test_actions_are_queued_as_their_final_period_arrives():
    ctl, sent = make_controller()
    ctl.on_event(ev("start"), 0.0, 0.0)
    assert ctl.on_event(ev("final", 0, "ball ahead"), 0.0, 1.0) == []
    (obs,) = ctl.on_event(ev("final", 2, "."), 0.0, 1.0)
    assert obs.kind == "observation" and obs.sentence == "ball ahead"
    assert ctl.on_event(ev("final", 3, "walk 1.0"), 0.1, 1.1) == []
    (rec,) = ctl.on_event(ev("final", 5, ".", t=100.2), 0.2, 1.2)
    assert rec.to_dict() == dict(response="r1", kind="action", sentence="walk 1.0", action="walk 1.0",
                                 reason=None, t=1.2, token_t=100.2, capture_t=99.0)
    ctl.tick(0.2), ctl.tick(0.25)
    assert sent[-1][0] > 0  # moving before the answer is finished


def test_duplicates_are_skipped_and_a_gap_drops_the_response():
    ctl, sent = make_controller()
    ctl.on_event(ev("start"), 0.0, 0.0)
    ctl.on_event(ev("final", 0, "ball . walk"), 0.0, 0.0)
    (rec,) = ctl.on_event(ev("final", 2, "walk 1.0 ."), 0.0, 0.0)  # overlaps the "walk" already fed
    assert rec.action == "walk 1.0"
    (gap,) = ctl.on_event(ev("final", 9, "turn left 90 ."), 0.1, 0.1)
    assert gap.kind == "rejected" and "gap" in gap.reason
    assert ctl.executor.idle  # the plan of a response with lost words is dropped
    assert ctl.on_event(ev("final", 5, "stop ."), 0.2, 0.2) == []  # and the rest is ignored


def test_start_replaces_the_plan_and_other_responses_are_ignored():
    ctl, sent = make_controller()
    ctl.on_event(ev("start"), 0.0, 0.0)
    ctl.on_event(ev("final", 0, "ball . walk 5.0 ."), 0.0, 0.0)
    assert not ctl.executor.idle
    assert ctl.on_event(ev("final", 0, "ball . turn left 90 .", response="old"), 0.0, 0.0) == []
    ctl.on_event(ev("start", response="r2"), 1.0, 1.0)
    assert ctl.executor.idle
    (obs, act) = ctl.on_event(ev("final", 0, "box . back 0.5 .", response="r2"), 1.0, 1.0)
    assert act.action == "back 0.5"


def test_unverified_words_act_only_when_allowed():
    for allowed in (False, True):
        ctl, _ = make_controller(act_on_unverified=allowed)
        ctl.on_event(ev("start"), 0.0, 0.0)
        ctl.on_event(ev("final", 0, "ball ."), 0.0, 0.0)
        (rec,) = ctl.on_event(ev("unverified", 2, "walk 1.0 ."), 0.0, 0.0)
        assert (rec.kind == "action") is allowed
        (rec,) = ctl.on_event(ev("final", 5, "turn left 5 ."), 0.0, 0.0)  # positions stay in step
        assert rec.action == "turn left 5"


def test_estop_clears_the_plan_and_refuses_actions_while_latched():
    ctl, sent = make_controller()
    ctl.on_event(ev("start"), 0.0, 0.0)
    ctl.on_event(ev("final", 0, "ball . walk 5.0 ."), 0.0, 0.0)
    ctl.set_estop(False, 0.01)  # not latched: a release changes nothing
    ctl.tick(0.05), ctl.tick(0.1)
    assert sent[-1][0] > 0
    ctl.set_estop(True, 0.12)
    ctl.tick(0.15)
    assert sent[-1] == (0.0, 0.0, 0.0) and ctl.executor.idle
    assert ctl.on_event(ev("final", 6, "walk 1.0 ."), 0.2, 0.2) == []  # the old response is over
    ctl.on_event(ev("start", response="r2"), 0.3, 0.3)
    _, rec = ctl.on_event(ev("final", 0, "ball . walk 1.0 .", response="r2"), 0.3, 0.3)
    assert rec.kind == "rejected" and "emergency stop" in rec.reason
    ctl.set_estop(False, 0.4)
    ctl.tick(0.45), ctl.tick(0.5)
    assert sent[-2:] == [(0.0, 0.0, 0.0)] * 2
    # the response that started while latched is dropped on release too
    assert ctl.on_event(ev("final", 6, "walk 1.0 .", response="r2"), 0.6, 0.6) == []
    ctl.on_event(ev("start", response="r3"), 0.7, 0.7)
    _, rec = ctl.on_event(ev("final", 0, "ball . walk 1.0 .", response="r3"), 0.7, 0.7)
    ctl.tick(0.75), ctl.tick(0.8)
    assert rec.kind == "action" and sent[-1][0] > 0


def test_token_events_schema():
    e = ev("final", 3, "walk 1.0 .")
    assert parse_token_event(e.to_json()) == e
    assert parse_token_event(json.loads(e.to_json())) == e
    for bad, msg in [("{", "not JSON"), ("[]", "JSON object"), ('{"response": "r"}', "lacks"),
                     (dict(json.loads(e.to_json()), kind="guess"), "'kind'"),
                     (dict(json.loads(e.to_json()), index=-1), "'index'"),
                     (dict(json.loads(e.to_json()), words=["a"]), "3 tokens but 1 words"),
                     (dict(json.loads(e.to_json()), t=float("nan")), "'t'"),
                     (dict(json.loads(e.to_json()), tokens="abc"), "must be a list")]:
        with pytest.raises(ValueError, match=msg):
            parse_token_event(bad)
