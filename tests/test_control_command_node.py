"""The command node in its own process over real DDS: final token events make Twists appear on
/cmd_vel, provisional ones never do, /estop zeroes the output at once and holds until released."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
import yaml  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

from spec_edge_cloud.control.token_events import TokenEvent  # noqa: E402
from spec_edge_cloud.ros.command_node import ESTOP_QOS, PARAMETERS, TOKENS_QOS  # noqa: E402
from processes import stop  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "robot.yaml"
MAX_VX = 0.6


class Harness:
    """A test node: publishes tokens and estops, records what the command node sends."""

    def __init__(self):
        rclpy.init()
        self.node = rclpy.create_node("command_node_test")
        self.tokens = self.node.create_publisher(String, "/spec/tokens", TOKENS_QOS)
        self.estop_pub = self.node.create_publisher(Bool, "/estop", ESTOP_QOS)
        self.twists: list[tuple[float, float, float, float]] = []
        self.records: list[dict] = []
        self.node.create_subscription(
            Twist, "/cmd_vel", lambda m: self.twists.append((time.monotonic(), m.linear.x, m.linear.y,
                                                             m.angular.z)), 100)
        self.node.create_subscription(String, "/spec/actions", lambda m: self.records.append(json.loads(m.data)), 100)

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
        assert harness.spin_until(lambda: len(harness.twists) > 5, 60), "the command node never published"
        harness.spin_until(lambda: harness.node.count_subscribers("/spec/tokens") > 0, 10)
        yield harness
    finally:
        stop(proc)
        harness.node.destroy_node()
        rclpy.try_shutdown()


def test_config_file_mirrors_the_node_parameters():
    params = yaml.safe_load(CONFIG.read_text())["command_node"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    assert all(type(params[k]) is type(v) for k, v in PARAMETERS.items())


def test_provisional_tokens_never_move_the_robot(h):
    t0 = time.monotonic()
    h.answer("p1", "ball ahead . walk 2.0 . turn left 90 .", kind="provisional")
    h.send("p1", "rollback", 0)
    h.spin(1.0)
    seen = h.since(t0)
    assert len(seen) >= 10 and all(tw[1:] == (0.0, 0.0, 0.0) for tw in seen)
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
    assert len(held) >= 10 and all(tw[1:] == (0.0, 0.0, 0.0) for tw in held)
    assert all(r["kind"] != "action" for r in h.records if r["response"] == "e2")
    t_release = time.monotonic()
    h.estop(False)
    h.spin(0.5)
    assert all(tw[1:] == (0.0, 0.0, 0.0) for tw in h.since(t_release))  # released: still no plan
    h.answer("e3", "ball . back 0.5 .")
    assert h.spin_until(lambda: any(tw[1] < 0 for tw in h.since(t_release)), 5)


def test_go2_sdk_backend_turns_final_tokens_into_sport_requests(h):
    """backend go2_sdk: the node stands the robot up, then sends Move at rate_hz (loopback DDS)."""
    from go2_sport_standin import StandIn

    domain = 101 + (os.getpid() + 50) % 100  # not the domain of test_control_go2_backend.py
    standin = StandIn(domain)
    node = None
    try:
        node = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.command_node", "--ros-args",
                                 "-p", "backend:=go2_sdk", "-p", "go2_interface:=lo", "-p", f"go2_domain_id:={domain}"])
        first = [standin.next_request(timeout=30)["api_id"], standin.next_request()["api_id"]]
        assert first == [1004, 1002]  # StandUp, BalanceStand
        assert h.spin_until(lambda: h.node.count_subscribers("/spec/tokens") > 1, 20)
        h.answer("g1", "ball . turn right 45 .")
        moves = []
        while len(moves) < 5:
            r = standin.next_request()
            if r["api_id"] == 1008:
                moves.append(json.loads(r["parameter"]))
        assert all(m["x"] == 0.0 and m["y"] == 0.0 and -1.5 <= m["z"] < 0 for m in moves)
        assert moves[-1]["z"] < moves[0]["z"]  # ramping up towards a right turn
    finally:
        if node is not None:
            stop(node)
        standin.close()
