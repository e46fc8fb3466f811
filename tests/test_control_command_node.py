"""The command node in its own process over real DDS: final token events make Twists appear on
/cmd_vel, provisional ones never do, /estop zeroes the output at once and holds until released; after
a stop a few zero twists, then silence; plans stop when the heartbeats stop; bounded plans; the Go2
backend never stands the robot up by itself."""
import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from std_msgs.msg import Bool, Header, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from spec_edge_cloud.control.token_events import TokenEvent  # noqa: E402
from spec_edge_cloud.control.backends import STOP_ZEROS  # noqa: E402
from spec_edge_cloud.ros.command_node import (ESTOP_QOS, HEARTBEAT_PERIOD_S, HEARTBEAT_QOS,  # noqa: E402
                                              PARAMETERS, TOKENS_QOS)
from processes import stop  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "robot.yaml"
MAX_VX = 0.6


class Harness:
    """A test node playing the draft node (tokens, heartbeats while `beating`) and the operator
    (estops, services); records what the command node sends."""

    def __init__(self):
        rclpy.init()
        self.node = rclpy.create_node("command_node_test")
        self.tokens = self.node.create_publisher(String, "/spec/tokens", TOKENS_QOS)
        self.estop_pub = self.node.create_publisher(Bool, "/estop", ESTOP_QOS)
        self.heartbeats = self.node.create_publisher(Header, "/spec/heartbeat", HEARTBEAT_QOS)
        self.beating = True
        self.node.create_timer(HEARTBEAT_PERIOD_S, lambda: self.beating and self.heartbeats.publish(Header()))
        self.twists: list[tuple[float, float, float, float]] = []
        self.records: list[dict] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(
            Twist, "/cmd_vel", lambda m: self.twists.append((time.monotonic(), m.linear.x, m.linear.y,
                                                             m.angular.z)), 100)
        self.node.create_subscription(String, "/spec/actions", lambda m: self.records.append(json.loads(m.data)), 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def call(self, service, timeout=10.0):
        client = self.node.create_client(Trigger, service)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"no service {service}"
            future = client.call_async(Trigger.Request())
            assert self.spin_until(future.done, timeout), f"{service} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.01)

    def spin_until(self, cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.01)
        return cond()

    def send(self, response, kind, index=0, text=""):
        words = tuple(text.split())
        ev = TokenEvent(response, kind, index, tuple(range(len(words))), words, time.time(), time.time() - 0.1)
        self.tokens.publish(String(data=ev.to_json()))

    def answer(self, response, text, kind="final"):
        """start, then one event per word, as a decoder would stream them."""
        self.send(response, "start")
        for i, w in enumerate(text.split()):
            self.send(response, kind, i, w)

    def estop(self, on):
        self.estop_pub.publish(Bool(data=on))

    def since(self, t):
        return [tw for tw in self.twists if tw[0] >= t]


@pytest.fixture(scope="module")
def h():
    proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args",
                             "--params-file", str(CONFIG), "-p", f"max_vx:={MAX_VX}", "-p", "walk_speed:=0.9",
                             "-p", "max_accel_xy:=10.0"])
    harness = Harness()
    try:
        assert harness.spin_until(lambda: harness.node.count_subscribers("/spec/tokens") > 0
                                  and harness.node.count_publishers("/cmd_vel") > 0, 60), "no command node"
        harness.spin(1.0)
        assert harness.twists == []  # it starts silent: nothing moved yet, so nothing to stop
        yield harness
    finally:
        stop(proc)
        harness.node.destroy_node()
        rclpy.try_shutdown()


def test_config_file_mirrors_the_node_parameters():
    params = yaml.safe_load(CONFIG.read_text())["/**/command_node"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    assert {k: params[k] for k in PARAMETERS} == {k: p.default for k, p in PARAMETERS.items()}
    assert all(type(params[k]) is type(p.default) for k, p in PARAMETERS.items())
    assert all(p.read_only and p.description for p in PARAMETERS.values())


def test_clamps_are_read_only_under_ros2_param_set(h):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(h.node, "command_node")
    assert client.wait_for_services(10.0)
    for name, value in (("max_vx", 0.9), ("watchdog_s", 5.0), ("max_distance_m", 100.0), ("backend", "go2_sdk")):
        future = client.set_parameters([Parameter(name, value=value)])
        assert h.spin_until(future.done, 10)
        (result,) = future.result().results
        assert not result.successful and "read-only" in result.reason, (name, result.reason)
    future = client.describe_parameters(["max_vx"])
    assert h.spin_until(future.done, 10)
    (d,) = future.result().descriptors
    assert d.read_only and "clamp" in d.description and d.floating_point_range[0].to_value == pytest.approx(3.8)


@pytest.mark.parametrize("params, message", [(["-p", "max_vx:=9.0"], "max_vx"),
                                             (["-p", "backend:=legs"], "backend must be one of"),
                                             (["-p", "max_actions:=0"], "max_actions"),
                                             (["-p", "allowed_actions:=[fly]"], "unknown verbs")])
def test_bad_parameters_end_the_node_with_one_fatal_line_and_code_2(params, message):
    p = subprocess.run([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args", "-r",
                        "__ns:=/bad", *params], capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    fatal = [x for x in out.splitlines() if "[FATAL]" in x]
    assert p.returncode == 2 and len(fatal) == 1 and message in fatal[0], out[-800:]


def test_provisional_tokens_never_move_the_robot(h):
    t0 = time.monotonic()
    h.answer("p1", "ball ahead . walk 2.0 . turn left 90 .", kind="provisional")
    h.send("p1", "rollback", 0)
    h.spin(1.0)
    assert all(tw[1:] == (0.0, 0.0, 0.0) for tw in h.since(t0))
    assert not [r for r in h.records if r["response"] == "p1"]


def test_final_tokens_move_the_robot_within_the_clamps(h):
    t0 = time.monotonic()
    h.answer("f1", "ball ahead . walk 2.0 .")
    assert h.spin_until(lambda: any(tw[1] > 0 for tw in h.since(t0)), 5)
    h.spin_until(lambda: any(tw[1] >= MAX_VX - 1e-9 for tw in h.since(t0)), 3)
    assert max(tw[1] for tw in h.since(t0)) == pytest.approx(MAX_VX)  # walk_speed 0.9 clamped
    obs, act = [r for r in h.records if r["response"] == "f1"]
    assert obs["kind"] == "observation" and obs["sentence"] == "ball ahead"
    assert act["kind"] == "action" and act["action"] == "walk 2.0" and act["t"] >= act["capture_t"]
    h.send("f1", "end", 9)
    assert h.spin_until(lambda: h.twists[-1][1:] == (0.0, 0.0, 0.0), 5)  # 2.0 m at 0.9 m/s: 2.2 s
    t_stop = h.twists[-1][0]
    h.spin(1.0)  # a few zero twists, then silence: twist_mux and go2_ros2_sdk release the input
    zeros = [tw for tw in h.twists if tw[0] >= t_stop - 0.2 and tw[1:] == (0.0, 0.0, 0.0)]
    assert len(zeros) == STOP_ZEROS and h.twists[-1][1:] == (0.0, 0.0, 0.0)


def test_estop_zeroes_at_once_and_holds_until_released(h):
    t0 = time.monotonic()
    h.answer("e1", "ball . walk 5.0 .")
    assert h.spin_until(lambda: any(tw[1] > 0.3 for tw in h.since(t0)), 5)
    t_stop = time.monotonic()
    h.estop(True)
    assert h.spin_until(lambda: h.since(t_stop) and h.since(t_stop)[-1][1:] == (0.0, 0.0, 0.0), 1)
    first_zero = next(tw[0] for tw in h.since(t_stop) if tw[1:] == (0.0, 0.0, 0.0))
    assert first_zero - t_stop < 0.2
    h.answer("e2", "ball . walk 5.0 . turn left 90 .")  # ignored while latched
    h.spin(1.0)
    held = h.since(first_zero)
    assert 1 <= len(held) <= STOP_ZEROS and all(tw[1:] == (0.0, 0.0, 0.0) for tw in held)
    assert all(r["kind"] != "action" for r in h.records if r["response"] == "e2")
    t_release = time.monotonic()
    h.estop(False)
    h.spin(0.5)
    assert all(tw[1:] == (0.0, 0.0, 0.0) for tw in h.since(t_release))  # released: still no plan
    h.answer("e3", "ball . back 0.5 .")
    assert h.spin_until(lambda: any(tw[1] < 0 for tw in h.since(t_release)), 5)


def test_a_silent_draft_node_stops_the_plan_within_the_watchdog(h):
    t0 = time.monotonic()
    h.answer("w1", "ball . walk 5.0 .")  # 5.6 s of walking at 0.9 m/s
    assert h.spin_until(lambda: any(tw[1] > 0.3 for tw in h.since(t0)), 5)
    h.beating = False  # the draft node goes silent: no heartbeat, no token event
    t_silent = time.monotonic()
    try:
        assert h.spin_until(lambda: h.since(t_silent) and h.since(t_silent)[-1][1:] == (0.0, 0.0, 0.0), 3)
        stopped = next(tw[0] for tw in h.since(t_silent) if tw[1:] == (0.0, 0.0, 0.0))
        assert stopped - t_silent < 0.5 + 0.45  # watchdog_s, plus periods and delivery on a loaded machine
        assert h.spin_until(lambda: any("watchdog" in (r["reason"] or "") for r in h.records), 2)
    finally:
        h.beating = True
    h.spin(0.5)
    assert all(tw[1:] == (0.0, 0.0, 0.0) for tw in h.since(stopped))  # heartbeats again: the plan is gone


def test_bounded_plans_and_a_million_word_message_never_block_the_control_loop(h):
    words = ["walk", "5.0", "."] * 333_334  # made first: the harness's heartbeats pause while it builds
    big = String(data=json.dumps({"response": "b1", "kind": "final", "index": 66, "tokens": list(range(len(words))),
                                  "words": words, "t": time.time(), "capture_t": None}))
    t0 = time.monotonic()
    h.answer("b1", "ball ahead . " + "walk 5.0 . " * 21)  # 105 m asked for; 10 m planned (11 s)
    assert h.spin_until(lambda: len([r for r in h.records if r["response"] == "b1"]) >= 4, 5)
    h.spin(0.5)
    kinds = [(r["kind"], r["action"]) for r in h.records if r["response"] == "b1"]
    assert kinds == [("observation", None), ("action", "walk 5.0"), ("action", "walk 5.0"), ("rejected", None)]
    assert "rest of the response is ignored" in h.records[-1]["reason"]
    t_big = time.monotonic()
    h.tokens.publish(big)
    assert h.spin_until(lambda: any("refused unread" in (r["reason"] or "") for r in h.records), 10)
    h.spin(1.0)
    window = [tw[0] for tw in h.twists if tw[0] >= t_big - 0.5]
    assert all(tw[1] > 0.3 for tw in h.since(t_big))  # still walking the verified 10 m
    gaps = [b - a for a, b in zip(window, window[1:])]
    # 20 Hz: 0.05 s apart; one such message used to hold the loop 4.9 s (room left for a loaded machine)
    assert max(gaps) < 1.0, f"the control loop stalled for {max(gaps):.2f} s"
    h.send("b2", "start")  # an empty response: the robot stops
    h.send("b2", "end")
    assert h.spin_until(lambda: h.twists[-1][1:] == (0.0, 0.0, 0.0), 3)
    assert t0 < t_big


def test_twist_stamped_in_a_namespace_and_a_last_zero_on_ctrl_c(h):
    """Relative topics under a namespace, TwistStamped, and on Ctrl-C the last message is a zero."""
    from geometry_msgs.msg import TwistStamped

    got = []
    h.node.create_subscription(TwistStamped, "/r2/cmd_vel", got.append, 100)
    tokens = h.node.create_publisher(String, "/r2/spec/tokens", TOKENS_QOS)
    beats = h.node.create_publisher(Header, "/r2/spec/heartbeat", HEARTBEAT_QOS)
    proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args",
                             "-r", "__ns:=/r2", "-p", "twist_stamped:=true", "-p", "frame_id:=r2/base"])
    try:
        assert h.spin_until(lambda: h.node.count_subscribers("/r2/spec/tokens") > 0, 30)
        h.spin(0.5)
        for i, text in enumerate(["", "ball .", "walk 2.0 ."]):
            words = tuple(text.split())
            kind = "start" if i == 0 else "final"
            index = 0 if i < 2 else 2
            tokens.publish(String(data=TokenEvent("s1", kind, index, tuple(range(len(words))), words,
                                                  time.time()).to_json()))
        end = time.monotonic() + 5
        while time.monotonic() < end and not any(m.twist.linear.x > 0.2 for m in got):
            beats.publish(Header())
            h.spin(0.05)
        assert got and got[-1].header.frame_id == "r2/base" and got[-1].twist.linear.x > 0.2
        assert got[-1].header.stamp.sec > 0
        proc.send_signal(signal.SIGINT)
        end = time.monotonic() + 10
        while time.monotonic() < end and proc.poll() is None:
            beats.publish(Header())
            h.spin(0.05)
        h.spin(0.3)
        assert proc.returncode == 0
        last = got[-1].twist
        assert (last.linear.x, last.linear.y, last.angular.z) == (0.0, 0.0, 0.0)
    finally:
        stop(proc)


def test_an_estop_publisher_with_a_timeout_must_keep_speaking(h):
    """estop_timeout_s (twist_mux lock semantics): never heard, the robot is held; a publisher speaking
    every 0.1 s lets it move; when it goes quiet the robot stops within the timeout."""
    twists = []
    h.node.create_subscription(Twist, "/lock/cmd_vel", lambda m: twists.append((time.monotonic(), m.linear.x)), 100)
    tokens = h.node.create_publisher(String, "/lock/spec/tokens", TOKENS_QOS)
    beats = h.node.create_publisher(Header, "/lock/spec/heartbeat", HEARTBEAT_QOS)
    estop = h.node.create_publisher(Bool, "/lock/estop", ESTOP_QOS)
    proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args",
                             "-r", "__ns:=/lock", "-p", "estop_timeout_s:=0.3"])

    def answer(rid):
        for kind, index, text in (("start", 0, ""), ("final", 0, "ball ."), ("final", 2, "walk 5.0 .")):
            words = tuple(text.split())
            tokens.publish(String(data=TokenEvent(rid, kind, index, tuple(range(len(words))), words,
                                                  time.time()).to_json()))

    def run(seconds, speak):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            beats.publish(Header())
            if speak:
                estop.publish(Bool(data=False))
            h.spin(0.1)

    try:
        assert h.spin_until(lambda: h.node.count_subscribers("/lock/spec/tokens") > 0, 30)
        h.spin(0.5)
        answer("k1")
        run(1.0, speak=False)
        assert twists == []  # never heard from the e-stop publisher: held still
        run(0.5, speak=True)
        answer("k2")  # released by its messages: a new answer moves the robot
        run(1.0, speak=True)
        assert any(vx > 0.3 for _, vx in twists)
        t_quiet = time.monotonic()
        run(1.5, speak=False)
        stopped = next(t for t, vx in twists if t > t_quiet and vx == 0.0)
        assert stopped - t_quiet < 0.3 + 0.45  # estop_timeout_s, plus periods and delivery on a loaded machine
        assert all(vx == 0.0 for t, vx in twists if t >= stopped)
    finally:
        stop(proc)


def test_go2_sdk_backend_never_stands_up_by_itself(h, tmp_path):
    """backend go2_sdk over loopback DDS: the motion mode is checked, the robot is not stood up at start;
    final tokens send Move at rate_hz; an e-stop damps it, and after the release only the operator's
    ~/stand (not a model's words) makes it move again; SDK return codes are logged and on /diagnostics."""
    from go2_sport_standin import StandIn

    domain = 101 + (os.getpid() + 50) % 100  # not the domain of test_control_go2_backend.py
    standin = StandIn(domain, silent_apis=(1004,))  # StandUp is never answered: SDK code 3104
    node = None
    log = tmp_path / "node.log"
    try:
        node = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args",
                                 "-r", "__ns:=/go2", "-p", "backend:=go2_sdk", "-p", "go2_interface:=lo",
                                 "-p", f"go2_domain_id:={domain}", "-r", "spec/tokens:=/spec/tokens",
                                 "-r", "spec/heartbeat:=/spec/heartbeat", "-r", "estop:=/estop",
                                 "-r", "spec/actions:=/spec/actions"],
                                stdout=log.open("w"), stderr=subprocess.STDOUT)
        assert h.spin_until(lambda: h.node.count_subscribers("/spec/tokens") > 1, 30)
        h.spin(1.0)
        with pytest.raises(queue.Empty):
            standin.next_request(timeout=1.0)  # started: no StandUp, no request at all
        h.answer("g1", "ball . turn right 45 .")
        moves = []
        while len(moves) < 5:
            r = standin.next_request()
            assert r["api_id"] == 1008
            moves.append(json.loads(r["parameter"]))
        assert all(m["x"] == 0.0 and m["y"] == 0.0 and -1.5 <= m["z"] < 0 for m in moves)
        assert moves[-1]["z"] < moves[0]["z"]  # ramping up towards a right turn
        h.estop(True)
        assert next_api(standin, {1001}) == 1001  # Damp
        h.estop(False)
        h.spin(0.3)
        h.answer("g2", "ball . walk 1.0 .")
        assert h.spin_until(lambda: any(r["response"] == "g2" and r["kind"] == "rejected" for r in h.records), 5)
        (g2,) = [r for r in h.records if r["response"] == "g2" and r["kind"] == "rejected"]
        assert "operator must stand it up" in g2["reason"]
        assert h.call("/go2/command_node/sit").success is False  # damped: stand first
        res = h.call("/go2/command_node/stand")
        assert res.success, res.message
        assert next_api(standin, {1004}) == 1004 and next_api(standin, {1002}) == 1002  # StandUp, BalanceStand
        h.answer("g3", "ball . walk 1.0 .")
        assert next_api(standin, {1008}) == 1008
        assert h.spin_until(lambda: any(s.name == "command_node: go2 sdk" and "StandUp" in s.message
                                        for a in h.diagnostics for s in a.status), 5)
        status = next(s for a in reversed(h.diagnostics) for s in a.status if s.name == "command_node: go2 sdk")
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == status.WARN and values["mode"] == "normal"
        assert values["StandUp"].startswith("last 3104") and values["Damp"].startswith("last 0 ")
        assert "Go2 SDK StandUp returned 3104 (timed out waiting for the robot's answer)" in log.read_text()
    finally:
        if node is not None:
            stop(node)
        standin.close()


def next_api(standin, wanted, timeout=5.0):
    """The api id of the next request among `wanted` (others, such as StopMove, are skipped)."""
    end = time.monotonic() + timeout
    while True:
        r = standin.next_request(timeout=max(end - time.monotonic(), 0.01))
        if r["api_id"] in wanted:
            return r["api_id"]


@pytest.mark.parametrize("mode, message", [("", "is in motion mode ''"), (None, "did not answer CheckMode")])
def test_go2_sdk_backend_refuses_to_start_outside_sport_mode(mode, message):
    from go2_sport_standin import StandIn

    domain = 101 + (os.getpid() + 60) % 100
    standin = StandIn(domain, mode=mode)
    try:
        out = subprocess.run([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args",
                              "-p", "backend:=go2_sdk", "-p", "go2_interface:=lo", "-p", f"go2_domain_id:={domain}"],
                             capture_output=True, text=True, timeout=60)
        fatal = [x for x in (out.stdout + out.stderr).splitlines() if "[FATAL]" in x]
        assert out.returncode == 2 and len(fatal) == 1 and message in fatal[0], out.stderr[-800:]
    finally:
        standin.close()
