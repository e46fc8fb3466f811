"""launch_testing file for launch/cloud.launch.py (run by tests/test_ros_launch_cloud.py through the
`launch_test` runner, or on a ROS 2 install with `launch_test`): the verifier node loads the shipped
target from the package's share directory, serves on `bind`, and exits with 0 at shutdown."""
import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare


@pytest.mark.launch_test
def generate_test_description():
    cloud = IncludeLaunchDescription(PythonLaunchDescriptionSource(
        [FindPackageShare("spec_edge_cloud"), "/launch/cloud.launch.py"]))
    return LaunchDescription([cloud, launch_testing.actions.ReadyToTest()])


class TestCloud(unittest.TestCase):
    def test_the_verifier_serves_the_shipped_target(self, proc_output):
        proc_output.assertWaitFor(expected_output="verifier ready on tcp://127.0.0.1:", timeout=180)
        proc_output.assertWaitFor(expected_output="share/spec_edge_cloud/models/target", timeout=5)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_the_verifier_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
