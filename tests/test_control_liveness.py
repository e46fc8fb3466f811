"""Liveness behind the controller, with injected time: a plan stops within watchdog_s once the draft
node goes silent (no token event, no heartbeat), an e-stop publisher with a timeout must keep
speaking (twist_mux lock semantics), and the twist output goes silent a few zeros after a stop."""
import pytest

from spec_edge_cloud.control.actions import MotionSpeeds
from spec_edge_cloud.control.backends import TwistBackend
from spec_edge_cloud.control.controller import Controller
from spec_edge_cloud.control.safety import GateConfig, SafetyGate
from spec_edge_cloud.control.token_events import TokenEvent

CFG = GateConfig(max_vx=1.0, max_accel_xy=100.0, max_accel_yaw=100.0, watchdog_s=0.5, rate_hz=20.0)
DT = CFG.period


def ev(kind, index=0, text="", response="r1"):
    words = tuple(text.split())
    return TokenEvent(response, kind, index, tuple(range(len(words))), words, 0.0)


def make(**kw):
    sent = []
    ctl = Controller(TwistBackend(lambda *v: sent.append(v)), SafetyGate(CFG), MotionSpeeds(walk=0.5), **kw)
    return ctl, sent


def run(ctl, sent, t0, t1, heartbeat=True):
    """Tick from t0 to t1 (heartbeats each tick when asked); (t, twist or None) per tick."""
    out, t = [], t0
    while t < t1 - 1e-9:
        if heartbeat:
            ctl.heartbeat(t)
        n = len(sent)
        ctl.tick(t)
        out.append((t, sent[-1] if len(sent) > n else None))
        t += DT
    return out


def walk_five(ctl, t=0.0, response="r1"):
    ctl.on_event(ev("start", response=response), t, t)
    (_, rec) = ctl.on_event(ev("final", 0, "ball . walk 5.0 .", response=response), t, t)
    assert rec.action == "walk 5.0"  # 10 s at 0.5 m/s


def test_heartbeats_keep_a_long_plan_going_and_their_loss_stops_it_within_the_watchdog():
    ctl, sent = make()
    walk_five(ctl)
    alive = run(ctl, sent, 0.0, 3.0)  # the draft node is alive: 3 s of walking, far past watchdog_s
    assert all(tw[0] == 0.5 for t, tw in alive if t > 0.2)
    t_kill = 3.0  # the draft node dies: no heartbeat, no event from here on
    after = run(ctl, sent, t_kill, t_kill + 2.0, heartbeat=False)
    moving = [t for t, tw in after if tw is not None and tw[0] > 0]
    assert moving and max(moving) <= t_kill - DT + CFG.watchdog_s  # the last heartbeat came at 3.0 - DT
    assert ctl.executor.idle and ctl.watchdog_stops == 1
    (notice,) = ctl.take_notices()
    assert notice.kind == "rejected" and notice.response == "r1" and "watchdog" in notice.reason
    # it braked to zero: a few zero twists, then silence
    tail = [tw for _, tw in after if not (tw is not None and tw[0] > 0)]
    assert tail[:3] == [(0.0, 0.0, 0.0)] * 3 and all(tw is None for tw in tail[3:])
    # the node comes back: its late words of the dropped response move nothing, a new response does
    assert ctl.on_event(ev("final", 5, "walk 1.0 ."), 5.5, 5.5) == []
    assert all(tw is None for _, tw in run(ctl, sent, 5.5, 6.5))
    walk_five(ctl, 6.5, response="r2")
    assert any(tw and tw[0] > 0 for _, tw in run(ctl, sent, 6.5, 7.0))


def test_token_events_alone_keep_the_plan_alive():
    ctl, sent = make()
    ctl.on_event(ev("start"), 0.0, 0.0)
    ctl.on_event(ev("final", 0, "ball . walk 5.0 ."), 0.0, 0.0)
    for i, word in enumerate("turn left 5 . stop .".split()):  # a word every 0.4 s, no heartbeat
        t = 0.4 * (i + 1)
        ctl.on_event(ev("final", 5 + i, word), t, t)
        run(ctl, sent, t - 0.4 + DT, t, heartbeat=False)
    assert ctl.watchdog_stops == 0 and not ctl.executor.idle


def test_an_estop_publisher_with_a_timeout_must_keep_speaking():
    ctl, sent = make(estop_timeout_s=0.3)
    walk_five(ctl)
    ticks = run(ctl, sent, 0.0, 0.5)
    assert all(tw is None for _, tw in ticks)  # never heard: held still from the first tick
    (notice,) = ctl.take_notices()
    assert "never heard" in notice.reason and ctl.gate.estopped and not ctl.needs_stand
    for i in range(20):  # the publisher speaks every 0.1 s: released, and a new answer moves
        ctl.set_estop(False, 0.5 + 0.1 * i)
        if i == 1:
            walk_five(ctl, 0.6, response="r2")
        run(ctl, sent, 0.5 + 0.1 * i, 0.6 + 0.1 * i)
    assert sent[-1][0] == 0.5
    after = run(ctl, sent, 2.5, 3.5)  # silent since 2.4: held at 2.4 + 0.3
    moving = [t for t, tw in after if tw is not None and tw[0] > 0]
    assert max(moving) <= 2.4 + 0.3 and ctl.gate.estopped and ctl.executor.idle
    assert "silent for" in ctl.take_notices()[0].reason
    assert ctl.status()["estop"] == "silent publisher"
    ctl.set_estop(False, 3.5)  # it speaks again: released, and the robot waits for a new response
    assert not ctl.gate.estopped and all(tw is None for _, tw in run(ctl, sent, 3.5, 4.0))


def test_close_leaves_a_zero_even_after_the_output_went_silent():
    sent = []
    backend = TwistBackend(lambda *v: sent.append(v), stop_zeros=2)
    backend.move(0.3, 0.0, 0.1)
    for _ in range(5):
        backend.stop()
    assert sent == [(0.3, 0.0, 0.1), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    backend.close()
    assert sent[-1] == (0.0, 0.0, 0.0) and len(sent) == 4
    with pytest.raises(ValueError, match="stop_zeros"):
        TwistBackend(print, stop_zeros=0)


def test_operator_postures_and_their_refusals():
    ctl, _ = make()
    assert ctl.operator_posture("stand") is None
    ctl.set_estop(True, 0.1)
    assert "release it first" in ctl.operator_posture("stand")
    ctl.set_estop(False, 0.3)
    assert not ctl.needs_stand  # a twist output is not damped by an e-stop
    with pytest.raises(ValueError):
        ctl.operator_posture("jump")
    ctl.on_event(ev("start"), 0.4, 0.4)  # by default a model may not change the robot's posture
    (_, stand) = ctl.on_event(ev("final", 0, "ball . stand ."), 0.4, 0.4)
    assert stand.kind == "rejected" and "allow-list" in stand.reason
