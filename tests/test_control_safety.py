"""Safety gate, alone and behind the whole controller: clamps, acceleration limits, allow-list,
watchdog, estop latch and NaN rejection, checked on every output sample with injected time."""
import math
import random

import pytest

from spec_edge_cloud.control.actions import ACTION_WORDS, MotionSpeeds
from spec_edge_cloud.control.backends import TwistBackend
from spec_edge_cloud.control.controller import Controller
from spec_edge_cloud.control.safety import GateConfig, SafetyGate
from spec_edge_cloud.control.token_events import KINDS, TokenEvent

CFG = GateConfig(max_vx=0.8, max_vy=0.4, max_vyaw=1.2, max_accel_xy=1.0, max_accel_yaw=2.0,
                 allowed_actions=("walk", "turn", "stop"), watchdog_s=0.3, rate_hz=20.0)
DT = CFG.period


def run_ticks(gate, t0, n, cmd=None):
    outs = []
    for i in range(n):
        t = t0 + i * DT
        if cmd is not None:
            gate.command(*cmd, t)
        outs.append((t, gate.step(t)))
    return outs


def test_clamps_and_ramps_towards_the_target():
    gate = SafetyGate(CFG)
    outs = [o for _, o in run_ticks(gate, 0.0, 60, cmd=(99.0, -99.0, 99.0))]
    assert all(not o.stopped for o in outs[1:])
    assert outs[-1].vx == pytest.approx(0.8) and outs[-1].vy == pytest.approx(-0.4)
    assert outs[-1].vyaw == pytest.approx(1.2)
    assert outs[1].vx == pytest.approx(1.0 * DT)  # one period of acceleration, not a jump


def test_first_output_without_any_command_is_a_stop():
    out = SafetyGate(CFG).step(0.0)
    assert out.stopped and out.reason == "idle" and (out.vx, out.vy, out.vyaw) == (0, 0, 0)


def test_watchdog_stops_within_its_window():
    gate = SafetyGate(CFG)
    run_ticks(gate, 0.0, 20, cmd=(0.5, 0.0, 0.0))
    last_cmd = 19 * DT
    after = run_ticks(gate, last_cmd + DT, 20)  # commands stop coming
    moving = [t for t, o in after if not o.stopped]
    stopped = [(t, o) for t, o in after if o.stopped]
    assert moving and max(moving) <= last_cmd + CFG.watchdog_s
    assert stopped[0][0] <= last_cmd + CFG.watchdog_s + DT and stopped[0][1].reason == "watchdog"
    assert all(o.stopped and o.vx == 0.0 for t, o in after if t > last_cmd + CFG.watchdog_s)
    assert not run_ticks(gate, 5.0, 2, cmd=(0.5, 0, 0))[-1][1].stopped  # a fresh command resumes


def test_estop_stops_at_once_and_holds_until_released():
    gate = SafetyGate(CFG)
    run_ticks(gate, 0.0, 40, cmd=(0.8, 0.0, 0.0))
    gate.set_estop(True, 2.0)
    held = run_ticks(gate, 2.0, 40, cmd=(0.8, 0.3, 1.0))  # commands keep coming while latched
    assert all(o.stopped and o.reason == "estop" and (o.vx, o.vy, o.vyaw) == (0, 0, 0) for _, o in held)
    assert gate.command(0.5, 0, 0, 4.0) is False
    gate.set_estop(False, 4.0)
    assert gate.step(4.0).stopped  # released, but nothing fresh yet: still still
    resumed = run_ticks(gate, 4.05, 5, cmd=(0.8, 0.0, 0.0))
    assert not resumed[-1][1].stopped and 0 < resumed[-1][1].vx <= 5 * DT * CFG.max_accel_xy + 1e-9


def test_nan_and_inf_are_rejected():
    gate = SafetyGate(CFG)
    run_ticks(gate, 0.0, 20, cmd=(0.5, 0.0, 0.0))
    for bad in [(math.nan, 0, 0), (0, math.inf, 0), (0, 0, -math.inf), ("1", 0, 0)]:
        assert gate.command(*bad, 1.0) is False
    assert gate.rejected_commands == 4
    outs = run_ticks(gate, 1.0, 30)
    assert all(math.isfinite(v) for _, o in outs for v in (o.vx, o.vy, o.vyaw))
    assert outs[-1][1].stopped  # the watchdog was not fed by the rejected commands


def test_allow_list_and_bad_configs():
    from spec_edge_cloud.control.actions import parse_action
    gate = SafetyGate(CFG)
    assert gate.refusal(parse_action("walk 1.0")) is None
    assert "allow-list" in gate.refusal(parse_action("sit"))
    assert gate.refusal(parse_action("stop")) is None
    assert SafetyGate(GateConfig(allowed_actions=())).refusal(parse_action("stop")) is None  # always allowed
    for bad, msg in [(dict(max_vx=5.0), "max_vx"), (dict(max_vy=-1.0), "max_vy"),
                     (dict(max_vyaw=math.nan), "max_vyaw"), (dict(allowed_actions=("jump",)), "jump"),
                     (dict(rate_hz=0.5), "rate_hz"), (dict(watchdog_s=0.01), "watchdog_s")]:
        with pytest.raises(ValueError, match=msg):
            GateConfig(**bad)


NUMBERS = ["1.0", "99999", "-90", "nan", "inf", "-inf", "1e308", "0", "-0.0", "5.0", "180", "0.1", "3.3",
           "185", "5.05", "25", "-1.5", "1e-9"]
WORDS = list(ACTION_WORDS) + ["jump", "fly", "walk", "turn", "left", "right", ".", ".", ".", "ball",
                              "Walk", "WALK", "sprint", "back", "strafe", "stand", "sit"] + NUMBERS
ADVERSARIAL = ["walk 1.0 .", "turn left 90 .", "walk 99999 .", "turn left -90 .", "jump .", "walk nan .", "strafe right inf .",
               "turn right 1e308 .", "walk -5.0 .", "sit .", "back 5.0 .", "walk 5.0 . walk 5.0 ."]


def random_stream(rng, n_events):
    response, index = "r0", 0
    events = [TokenEvent(response, "start", 0, (), (), 0.0)]
    for k in range(n_events):
        kind = rng.choices(KINDS, weights=[1, 3, 8, 2, 2, 1])[0]
        if kind == "start":
            response, index = f"r{k}", 0
        r = rng.random()
        if r < 0.3:
            words = tuple(rng.choice(ADVERSARIAL).split())
        elif r < 0.5:  # a sentence of random action words, ended
            words = tuple(rng.choice(ACTION_WORDS[:-1]) for _ in range(rng.randint(1, 3))) + (".",)
        else:
            words = tuple(rng.choice(WORDS) for _ in range(rng.randint(0, 6)))
        jitter = rng.random()  # mostly in order; some duplicates, a few gaps (lost messages)
        start = index if jitter > 0.06 else index - rng.randint(1, 3) if jitter > 0.01 else index + 2
        events.append(TokenEvent(response, kind, max(start, 0), tuple(range(len(words))), words, 0.0))
        if kind in ("final", "unverified"):
            index += len(words)
    return events


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_token_streams_never_leave_the_clamps_or_the_allow_list(seed):
    rng = random.Random(seed)
    sent = []
    # zeros on every stopped tick once it moved, so that every tick's output can be checked
    ctl = Controller(TwistBackend(lambda *v: sent.append(v), stop_zeros=10**9), SafetyGate(CFG),
                     MotionSpeeds(walk=rng.choice([0.3, 2.0, 3.0]), strafe=0.9, turn=3.5),
                     act_on_unverified=rng.random() < 0.5, posture_hold_s=0.2)
    events = random_stream(rng, 300)
    t, prev, queued = 0.0, None, []
    for ev in events:
        for rec in ctl.on_event(ev, t, t):
            if rec.kind == "action":
                queued.append(rec.action.split()[0])
        if rng.random() < 0.02:
            ctl.set_estop(rng.random() < 0.3, t)
        for _ in range(rng.randint(0, 8)):
            t += DT * rng.uniform(0.5, 3.0)  # jittery ticks, late ones included
            n_before = len(sent)
            out = ctl.tick(t)
            assert len(sent) in (n_before, n_before + 1)  # a twist per tick, or silence ...
            if len(sent) == n_before:
                assert out.vx == out.vy == out.vyaw == 0.0 and (prev is None or prev[1] == (0.0, 0.0, 0.0))
            v = sent[-1] if len(sent) > n_before else (0.0, 0.0, 0.0)  # ... only when still
            assert all(math.isfinite(x) for x in v)
            assert -CFG.max_vx <= v[0] <= CFG.max_vx and -CFG.max_vy <= v[1] <= CFG.max_vy
            assert -CFG.max_vyaw <= v[2] <= CFG.max_vyaw
            if out.stopped or ctl.gate.estopped:
                assert v == (0.0, 0.0, 0.0)
            if prev is not None and not out.stopped:
                dt = min(t - prev[0], DT)
                assert abs(v[0] - prev[1][0]) <= CFG.max_accel_xy * dt + 1e-9
                assert abs(v[1] - prev[1][1]) <= CFG.max_accel_xy * dt + 1e-9
                assert abs(v[2] - prev[1][2]) <= CFG.max_accel_yaw * dt + 1e-9
            prev = (t, v)
    assert set(queued) <= set(CFG.allowed_actions)
    assert queued, "the fuzzer should get some actions through"
    assert any(v != (0.0, 0.0, 0.0) for v in sent), "and some of them should move the robot"


def test_provisional_rollback_and_unverified_words_never_move_the_robot():
    sent = []
    ctl = Controller(TwistBackend(lambda *v: sent.append(v)), SafetyGate(CFG))
    ctl.on_event(TokenEvent("r", "start", 0, (), (), 0.0), 0.0, 0.0)
    words = tuple("ball . walk 5.0 . turn left 90 .".split())
    ids = tuple(range(len(words)))
    for kind in ("provisional", "rollback", "provisional", "unverified"):
        records = ctl.on_event(TokenEvent("r", kind, 0, ids, words, 0.0), 0.0, 0.0)
        assert all(r.kind != "action" for r in records)
    for i in range(100):
        ctl.heartbeat(i * DT)
        ctl.tick(i * DT)
    assert sent == []  # never moved, so not even a stop's zeros
