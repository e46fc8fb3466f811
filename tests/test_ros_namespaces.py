"""Two robots on one DDS domain, apart by namespace: each has its own sim, command and draft node
(started with `-r __ns:=/robotN`, relative topic names), both draft nodes verified by one verifier
node over ZeroMQ. A robot moves only on its own draft node's tokens. robot1 runs on its simulator's
clock (use_sim_time), robot2 on the wall clock: each one's latency figures are on its own one clock. The shared parameter files are
keyed `/**/node` and reach the namespaced nodes; over the real parameter services a start-up-only
parameter is refused and a runtime one is validated."""
import json
import os
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Twist  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from processes import stop  # noqa: E402
from ros_models import INSTRUCTION, make_pair  # noqa: E402
from spec_edge_cloud.ros.command_node import TOKENS_QOS  # noqa: E402
from spec_edge_cloud.ros.qos import INSTRUCTION_QOS  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config"
ROBOTS = ("robot1", "robot2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node(executable: str, namespace: str | None, *ros_args: str) -> subprocess.Popen:
    args = [sys.executable, "-m", f"spec_edge_cloud.ros.{executable}", "--ros-args", *ros_args]
    if namespace:
        args += ["-r", f"__ns:=/{namespace}"]
    return subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"})


class Robot:
    def __init__(self, probe, name):
        self.name, self.events, self.actions, self.twists, self.odom = name, [], [], [], []
        self.metrics = []
        probe.create_subscription(DiagnosticArray, f"/{name}/spec/metrics", lambda m: self.metrics.extend(
            {kv.key: kv.value for kv in s.values} for s in m.status), 10)
        probe.create_subscription(String, f"/{name}/spec/tokens", lambda m: self.events.append(json.loads(m.data)),
                                  TOKENS_QOS)
        probe.create_subscription(String, f"/{name}/spec/actions", lambda m: self.actions.append(json.loads(m.data)),
                                  100)
        probe.create_subscription(Twist, f"/{name}/cmd_vel",
                                  lambda m: self.twists.append((m.linear.x, m.linear.y, m.angular.z)), 100)
        probe.create_subscription(Odometry, f"/{name}/odom", lambda m: self.odom.append(m.pose.pose), 10)
        self.instruction = probe.create_publisher(String, f"/{name}/instruction", INSTRUCTION_QOS)

    def responses(self) -> set[str]:
        return {e["response"] for e in self.events if e["kind"] == "final"}

    def moving(self) -> bool:
        return any(abs(vx) + abs(vy) + abs(vyaw) > 0.05 for vx, vy, vyaw in self.twists)

    def displacement(self) -> tuple[float, float]:
        a, b = self.odom[0], self.odom[-1]
        yaw = lambda q: 2 * math.atan2(q.z, q.w)  # noqa: E731
        return (math.hypot(b.position.x - a.position.x, b.position.y - a.position.y),
                abs(yaw(b.orientation) - yaw(a.orientation)))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    target, draft = make_pair(tmp)
    port = free_port()
    # a second parameter file, keyed as the shipped ones are: it must reach /robotN/draft_node too
    overrides = tmp / "draft.yaml"
    overrides.write_text(f"/**/draft_node:\n  ros__parameters:\n    draft_model: {draft}\n"
                         f"    endpoint: tcp://127.0.0.1:{port}\n    exit_threshold: 0.0\n"
                         "    replan_period_s: 1.0\n    device: cpu\n")
    procs = [node("verifier_node", None, "--params-file", str(CONFIG / "cloud.yaml"), "-p", f"target_dir:={target}",
                  "-p", f"bind:=tcp://127.0.0.1:{port}", "-p", "device:=cpu")]
    for name, seed, clock in zip(ROBOTS, (3, 5), (("-p", "use_sim_time:=true"), ("-r", "/clock:=/robot2/clock"))):
        procs += [node("sim_node", name, "--params-file", str(CONFIG / "sim.yaml"), "-p", f"seed:={seed}", *clock),
                  node("command_node", name, "--params-file", str(CONFIG / "robot.yaml"), *clock),
                  node("draft_node", name, "--params-file", str(CONFIG / "robot.yaml"),
                       "--params-file", str(overrides), *clock)]
    rclpy.init()
    probe = rclpy.create_node("fleet_probe")
    robots = {name: Robot(probe, name) for name in ROBOTS}

    def spin_until(cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            rclpy.spin_once(probe, timeout_sec=0.05)
        return cond()
    try:
        yield probe, robots, spin_until, procs
    finally:
        stop(*procs)
        probe.destroy_node()
        rclpy.try_shutdown()


def test_each_robot_moves_only_on_its_own_tokens(fleet):
    probe, robots, spin_until, procs = fleet
    one, two = robots["robot1"], robots["robot2"]
    assert spin_until(lambda: one.odom and two.odom, 120), "the namespaced sims did not come up"
    one.instruction.publish(String(data=INSTRUCTION))
    assert spin_until(lambda: one.moving() and one.actions, 240), \
        f"robot1 did not move on its task: {len(one.events)} token events, codes {[p.poll() for p in procs]}"
    spin_until(lambda: False, 2.0)
    assert not two.events and not two.actions, "robot2 heard tokens of a task it was never given"
    assert not two.moving(), "robot2 moved on robot1's tokens"
    moved, turned = two.displacement()
    assert moved < 0.05 and turned < 0.05, (moved, turned)
    moved, turned = one.displacement()
    assert moved > 0.05 or turned > 0.05, "robot1's sim did not move"

    two.instruction.publish(String(data=INSTRUCTION))
    assert spin_until(lambda: two.moving() and two.actions, 240), "robot2 did not move on its own task"
    spin_until(lambda: False, 1.0)
    for robot, other in ((one, two), (two, one)):
        acted_on = {a["response"] for a in robot.actions if a["kind"] == "action"}
        assert acted_on and acted_on <= robot.responses(), f"{robot.name} acted on responses not its own"
        assert not acted_on & other.responses()


def test_latency_is_measured_on_each_robots_own_clock(fleet):
    _, robots, spin_until, _ = fleet
    assert spin_until(lambda: all(r.metrics for r in robots.values()), 120), "no spec/metrics"
    sim, wall = robots["robot1"].metrics[-1], robots["robot2"].metrics[-1]
    assert float(sim["capture_t"]) < 1e5, "robot1 runs on sim time: its frames are stamped in sim seconds"
    assert float(wall["capture_t"]) > 1e9, "robot2 runs on the wall clock"
    for m in (sim, wall):
        # a frame and the /clock tick it was stamped on travel apart: allow one 20 ms tick of skew
        assert 0 < float(m["latency_s"]) < 120 and -0.02 <= float(m["frame_age_s"]) <= float(m["latency_s"]), m
    for robot in robots.values():   # the command node's records: time to the first action, on that clock
        acted = [a for a in robot.actions if a["kind"] == "action" and a["capture_t"] is not None]
        assert acted and all(0 < a["t"] - a["capture_t"] < 120 for a in acted), (robot.name, acted[:2])


def call(probe, client, future, timeout=20.0):
    end = time.monotonic() + timeout
    while not future.done() and time.monotonic() < end:
        rclpy.spin_once(probe, timeout_sec=0.05)
    assert future.done(), "no answer from the parameter service"
    return future.result()


def test_start_up_parameters_are_refused_and_runtime_ones_validated(fleet):
    probe, _, _, _ = fleet
    draft = AsyncParameterClient(probe, "/robot1/draft_node")
    assert draft.wait_for_services(60.0)

    def set_one(client, name, value):
        return call(probe, client, client.set_parameters([Parameter(name, value=value)])).results[0]

    got = call(probe, draft, draft.get_parameters(["replan_period_s", "device", "max_new_tokens"])).values
    assert (got[0].double_value, got[1].string_value, got[2].integer_value) == (1.0, "cpu", 48), \
        "the /**/draft_node parameter files did not reach the namespaced node"
    refused = set_one(draft, "endpoint", "tcp://127.0.0.1:1")
    assert not refused.successful and "read-only" in refused.reason
    assert not set_one(draft, "gamma", 0).successful                  # out of DecodeConfig's range
    bad = set_one(draft, "mode", "telepathy")
    assert not bad.successful and "unknown mode" in bad.reason       # DecodeConfig's own validation
    assert set_one(draft, "max_new_tokens", 40).successful
    described = call(probe, draft, draft.describe_parameters(["gamma", "draft_model"])).descriptors
    assert described[0].description and described[0].integer_range[0].from_value == 1
    assert described[1].read_only
    for name, parameter, value in (("/robot2/sim_node", "seed", 7), ("/verifier_node", "bind", "tcp://127.0.0.1:1")):
        client = AsyncParameterClient(probe, name)
        assert client.wait_for_services(60.0), name
        result = set_one(client, parameter, value)
        assert not result.successful and "read-only" in result.reason, (name, result.reason)
