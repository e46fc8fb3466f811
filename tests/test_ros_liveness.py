"""Liveness over real DDS with a real draft node: the robot walks a long verified plan ("walk 5.0",
10 s at 0.5 m/s), the draft node is killed (SIGKILL: no goodbye), and the command node stops the
robot within watchdog_s because the heartbeats and token events stopped. Times are the twists' own
stamps (TwistStamped, stamped by the command node when it sends), so a busy test process cannot make
the robot look slower than it was."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
import yaml  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from processes import stop  # noqa: E402
from ros_models import ANSWER, INSTRUCTION, make_pair  # noqa: E402
from spec_edge_cloud.ros import images  # noqa: E402
from spec_edge_cloud.ros.qos import INSTRUCTION_QOS  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "robot.yaml"
WATCHDOG_S = yaml.safe_load(CONFIG.read_text())["/**/command_node"]["ros__parameters"]["watchdog_s"]


def test_a_killed_draft_node_stops_the_robot_mid_walk_within_the_watchdog(tmp_path):
    target, draft = make_pair(tmp_path, answer=ANSWER.replace("walk 0.5", "walk 5.0"))
    node_args = [sys.executable, "-m"]
    command = subprocess.Popen(node_args + ["spec_edge_cloud.ros.command_node", "--ros-args",
                                            "--params-file", str(CONFIG), "-p", "twist_stamped:=true"])
    drafter = subprocess.Popen(node_args + ["spec_edge_cloud.ros.draft_node", "--ros-args", "--params-file",
                                            str(CONFIG), "-p", f"draft_model:={draft}", "-p",
                                            f"inprocess_target:={target}", "-p", "replan_period_s:=60.0"])
    rclpy.init()
    node = rclpy.create_node("liveness_test")
    twists, records = [], []
    node.create_subscription(TwistStamped, "/cmd_vel", lambda m: twists.append(
        (images.seconds(m.header.stamp), m.twist.linear.x)), 100)
    node.create_subscription(String, "/spec/actions", lambda m: records.append(json.loads(m.data)), 100)
    camera = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    instruction = node.create_publisher(String, "/instruction", INSTRUCTION_QOS)
    frame = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    node.create_timer(0.1, lambda: camera.publish(images.image_msg(frame, time.time(), "camera")))

    def spin_until(cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            rclpy.spin_once(node, timeout_sec=0.02)
        return cond()

    try:
        # a loaded two-core machine can take minutes to start a torch process
        assert spin_until(lambda: node.count_subscribers("/instruction") > 0 or drafter.poll() is not None, 240)
        assert drafter.poll() is None and node.count_subscribers("/instruction") > 0, "the draft node never came up"
        instruction.publish(String(data=INSTRUCTION))
        assert spin_until(lambda: any(vx >= 0.5 for _, vx in twists), 150), f"never walked: {records}"
        assert "walk 5.0" in [r["action"] for r in records if r["kind"] == "action"]
        spin_until(lambda: False, 0.5)
        t_kill = time.time()
        drafter.send_signal(signal.SIGKILL)
        assert spin_until(lambda: twists[-1][0] > t_kill and twists[-1][1] == 0.0, 5)
        t_zero = next(t for t, vx in twists if t > t_kill and vx == 0.0)
        # the robot was 1 s into 10 s of walking; it stops within the watchdog (plus the heartbeat period,
        # a control period and the scheduling of a loaded two-core machine)
        assert t_zero - t_kill < WATCHDOG_S + 0.4, f"stopped {t_zero - t_kill:.2f} s after the kill"
        spin_until(lambda: False, 1.0)
        assert all(vx == 0.0 for t, vx in twists if t >= t_zero)
        assert any(r["kind"] == "rejected" and "watchdog" in (r["reason"] or "") for r in records)
    finally:
        stop(drafter, command)
        node.destroy_node()
        rclpy.try_shutdown()
