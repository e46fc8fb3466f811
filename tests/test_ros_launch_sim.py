"""launch_testing, for machines with ROS 2 installed: sim.launch.py starts the whole embedded pipeline
(sim, robot nodes, verifier behind the link emulator), an image becomes a Twist on /cmd_vel, and
every process exits cleanly at shutdown. Run there with `launch_test tests/test_ros_launch_sim.py`
(or `colcon test`) after `colcon build`. SKIPPED in this project's environment: launch_testing
comes only with a ROS 2 install (it is not on PyPI); `spec-edge-cloud up` is tested instead."""
import os
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing comes with a ROS 2 install, not from PyPI: not run here")
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def generate_test_description():
    sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory("spec_edge_cloud"), "launch",
                                                   "sim.launch.py")),
        launch_arguments={"target": str(MODELS / "target"), "draft": str(MODELS / "draft"),
                          "verifier_port": "47555", "link_port": "47556"}.items())
    return LaunchDescription([sim, launch_testing.actions.ReadyToTest()])


class TestSimPipeline(unittest.TestCase):
    def test_the_draft_node_answers_the_simulated_task(self, proc_output):
        proc_output.assertWaitFor("(spec-ee-pre):", timeout=180)

    def test_a_final_action_reaches_cmd_vel(self):
        rclpy.init()
        try:
            node = rclpy.create_node("launch_test_listener")
            moving = []
            node.create_subscription(Twist, "/cmd_vel", lambda m: moving.append(
                abs(m.linear.x) + abs(m.linear.y) + abs(m.angular.z) > 0), 10)
            deadline = time.monotonic() + 180
            while not any(moving) and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            self.assertTrue(any(moving), "no non-zero Twist on /cmd_vel within 180 s")
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_every_process_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
