"""launch_testing file for launch/sim.launch.py (run by tests/test_ros_launch_sim.py through the
`launch_test` runner, or on a ROS 2 install with `launch_test` / colcon test): the nodes come up,
the sim's "go to the <colour> <object>" task moves the robot on /cmd_vel from verified ("final")
tokens, and every process exits with 0 at shutdown. The models run at their own speed (no timing
emulation); launch arguments given to the runner (ports, rtt_ms) reach sim.launch.py."""
import os
import re
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
    sim = IncludeLaunchDescription(PythonLaunchDescriptionSource(
        [FindPackageShare("spec_edge_cloud"), "/launch/sim.launch.py"]),
        launch_arguments={"target_profile": "", "draft_profile": ""}.items())   # models at their own speed
    return LaunchDescription([sim, launch_testing.actions.ReadyToTest()])


class TestSimTask(unittest.TestCase):
    def test_the_task_moves_the_robot_from_verified_tokens(self):
        seen = watch_until_motion(MOTION_WITHIN_S)
        self.assertTrue(seen.instructions and re.fullmatch(r"go to the \w+ \w+", seen.instructions[-1]),
                        seen.instructions)
        self.assertIsNotNone(seen.finals_before_motion, f"no motion on /cmd_vel within {MOTION_WITHIN_S} s "
                                                        f"({len(seen.finals)} final token events)")
        self.assertGreater(seen.finals_before_motion, 0, "the robot moved before any verified (final) token")
        print(f"sim task {seen.instructions[-1]!r}: moving after {seen.finals_before_motion} final token "
              f"events: {seen.words()}")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_every_process_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
