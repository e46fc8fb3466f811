"""launch_testing file for launch/replay.launch.py (run by tests/test_ros_launch_replay.py through the
`launch_test` runner, or on a ROS 2 install with `launch_test`): the camera node replays the shipped
bag from the package's share directory, an instruction on /instruction is answered with verified
("final") tokens that move the robot on /cmd_vel, and every process exits with 0 at shutdown."""
import os
import sys
import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the runner loads this file by path
from motion_watch import watch_until_motion  # noqa: E402

MOTION_WITHIN_S = 300


@pytest.mark.launch_test
def generate_test_description():
    replay = IncludeLaunchDescription(PythonLaunchDescriptionSource(
        [FindPackageShare("spec_edge_cloud"), "/launch/replay.launch.py"]))
    return LaunchDescription([replay, launch_testing.actions.ReadyToTest()])


class TestReplay(unittest.TestCase):
    def test_an_instruction_over_the_shipped_bag_moves_the_robot_from_verified_tokens(self, proc_output):
        proc_output.assertWaitFor(expected_output="camera node: source bag", timeout=180)
        seen = watch_until_motion(MOTION_WITHIN_S, instruction="go to the red ball")
        self.assertIsNotNone(seen.finals_before_motion, f"no motion on /cmd_vel within {MOTION_WITHIN_S} s "
                                                        f"({len(seen.finals)} final token events)")
        self.assertGreater(seen.finals_before_motion, 0, "the robot moved before any verified (final) token")
        print(f"replay: moving after {seen.finals_before_motion} final token events: {seen.words()}")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_every_process_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
