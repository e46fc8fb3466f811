"""The robot side on a real Go2: camera node (Go2 front camera), draft node, command node (Go2 SDK).

    ros2 launch spec_edge_cloud robot.launch.py endpoint:=tcp://CLOUD:5555 go2_interface:=eth0

Parameters: config/robot.yaml (`camera_node`, `draft_node`, `command_node`); the arguments below
override a few. sim.launch.py and replay.launch.py include this file with camera:=false (the
simulator is the camera) or camera_source:=bag, and backend:=twist. The same processes without
ROS installed: `spec-edge-cloud up up_robot`. NOT RUN in this project's environment (no `launch`
package, no Go2): tests/test_ros_launch_files.py checks it statically.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "spec_edge_cloud"
ARGUMENTS = {
    "endpoint": "tcp://127.0.0.1:5555",   # the verifier (or a link emulator in front of it)
    "draft": "models/draft",              # the draft model's directory
    "mode": "spec-ee-pre",
    "draft_profile": "",                  # timing emulation of the draft ("": real speed)
    "camera": "true",                     # start the camera node (false: something else publishes images)
    "camera_source": "go2",               # topic | opencv | bag | go2
    "bag_path": "",                       # camera_source bag
    "backend": "go2_sdk",                 # command node: go2_sdk drives the robot, twist publishes /cmd_vel
    "go2_interface": "eth0",              # the network interface wired to the Go2
}


def config(name):
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def text(name):
    """A launch argument as a string parameter (kept a string even when it looks like a number)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description():
    camera = Node(
        package=PACKAGE, executable="camera_node", output="screen",
        condition=IfCondition(LaunchConfiguration("camera")),
        parameters=[config("robot.yaml"), {"source": text("camera_source"), "bag_path": text("bag_path"),
                                           "go2_interface": text("go2_interface")}])
    draft = Node(
        package=PACKAGE, executable="draft_node", output="screen",
        parameters=[config("robot.yaml"), {"draft_model": text("draft"), "mode": text("mode"),
                                           "endpoint": text("endpoint"), "draft_profile": text("draft_profile")}])
    command = Node(
        package=PACKAGE, executable="command_node", output="screen",
        parameters=[config("robot.yaml"), {"backend": text("backend"), "go2_interface": text("go2_interface")}])
    return LaunchDescription([DeclareLaunchArgument(k, default_value=v) for k, v in ARGUMENTS.items()]
                             + [camera, draft, command])
