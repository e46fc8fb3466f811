"""launch_testing, for machines with ROS 2 installed: cloud.launch.py starts the verifier node, which
serves on its endpoint, and it exits cleanly at shutdown. Run there with `launch_test
tests/test_ros_launch_cloud.py` after `colcon build`. SKIPPED in this project's environment:
launch_testing comes only with a ROS 2 install (it is not on PyPI)."""
import os
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing comes with a ROS 2 install, not from PyPI: not run here")
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

TARGET = Path(__file__).resolve().parents[1] / "models" / "target"


def generate_test_description():
    cloud = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory("spec_edge_cloud"), "launch",
                                                   "cloud.launch.py")),
        launch_arguments={"target": str(TARGET), "bind": "tcp://127.0.0.1:47565"}.items())
    return LaunchDescription([cloud, launch_testing.actions.ReadyToTest()])


class TestCloud(unittest.TestCase):
    def test_the_verifier_serves(self, proc_output):
        proc_output.assertWaitFor("verifier ready on tcp://127.0.0.1:47565", timeout=120)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_the_verifier_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
