"""The cloud side: the verifier node (target model + exit heads behind ZeroMQ), for ROS 2 installs.

    ros2 launch spec_edge_cloud cloud.launch.py bind:=tcp://0.0.0.0:5555 target:=/models/target

Parameters: config/cloud.yaml (`verifier_node`); off loopback set its CURVE keys there. Hosts without
ROS run the same server with `spec-edge-cloud verifier --config config/cloud.yaml` or
`spec-edge-cloud up up_cloud`. NOT RUN in this project's environment (no `launch` package):
tests/test_ros_launch_files.py checks it statically.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "spec_edge_cloud"
ARGUMENTS = {
    "target": "models/target",     # the target model's directory
    "target_profile": "",          # timing emulation, e.g. go2-orin-a100 ("": real speed)
    "bind": "tcp://127.0.0.1:5555",
}


def config(name):
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def text(name):
    """A launch argument as a string parameter (kept a string even when it looks like a number)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description():
    verifier = Node(
        package=PACKAGE, executable="verifier_node", output="screen",
        parameters=[config("cloud.yaml"),
                    {"target_dir": text("target"), "target_profile": text("target_profile"), "bind": text("bind")}])
    return LaunchDescription([DeclareLaunchArgument(k, default_value=v) for k, v in ARGUMENTS.items()] + [verifier])
