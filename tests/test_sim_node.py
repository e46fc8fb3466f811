"""sim_node in its own process over real DDS: /cmd_vel moves the robot on /odom, images arrive,
the task is latched on /instruction and the episode's end is reported on /sim/episode."""
import json
import math
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from processes import stop  # noqa: E402

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def spin_until(node, done, timeout):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return done()


def test_sim_node_over_dds():
    proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.sim_node", "--ros-args",
                             "-p", "seed:=3", "-p", "instruction:=go to the green box",
                             "-p", "publish_instruction:=true", "-p", "timeout_s:=5.0",
                             "-p", "camera_rate_hz:=10.0", "-p", "image_size:=128"])
    rclpy.init()
    try:
        node = rclpy.create_node("sim_probe")
        odom, images, clock, instruction, episodes = [], [], [], [], []
        node.create_subscription(Odometry, "/odom", odom.append, 50)
        node.create_subscription(Image, "/camera/image_raw", images.append, qos_profile_sensor_data)
        node.create_subscription(Clock, "/clock", clock.append, 10)
        node.create_subscription(String, "/instruction", lambda m: instruction.append(m.data), LATCHED)
        node.create_subscription(String, "/sim/episode", lambda m: episodes.append(json.loads(m.data)), 10)
        cmd = node.create_publisher(Twist, "/cmd_vel", 10)
        assert spin_until(node, lambda: odom and instruction, 60), "no /odom or /instruction from sim_node"
        assert instruction == ["go to the green box"]

        start = odom[-1].pose.pose
        heading = 2 * math.atan2(start.orientation.z, start.orientation.w)
        twist = Twist()
        twist.linear.x = 0.5
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:  # re-sent at 10 Hz, as a controller does
            cmd.publish(twist)
            spin_until(node, lambda: False, 0.1)
        # the last command holds 1 s (sim time, which lags wall time on a loaded machine), then it stops
        stopped = spin_until(node, lambda: abs(odom[-1].twist.twist.linear.x) < 0.15, 6.0)
        end = odom[-1].pose.pose
        dx, dy = end.position.x - start.position.x, end.position.y - start.position.y
        forward = math.cos(heading) * dx + math.sin(heading) * dy
        assert 0.6 < forward < 1.6, f"moved {forward:.2f} m forward"
        assert stopped, "still walking after the hold ran out"

        assert len(images) >= 10
        image = images[-1]
        assert (image.width, image.height, image.encoding, image.step) == (128, 128, "rgb8", 384)
        assert len(image.data) == 128 * 128 * 3 and len(set(bytes(image.data[::97]))) > 5
        assert clock and clock[-1].clock.sec >= 2

        assert spin_until(node, lambda: episodes, 20), "no /sim/episode after the timeout"
        assert episodes[0]["outcome"] == "fail" and episodes[0]["reason"] == "timeout"
        assert episodes[0]["instruction"] == "go to the green box" and episodes[0]["distance"] > 0
    finally:
        stop(proc)
        rclpy.try_shutdown()
