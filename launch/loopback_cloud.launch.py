"""The cloud on this machine: the verifier (cloud.launch.py) on loopback behind the link emulator
(`spec-edge-cloud link`), which adds the round trip of a real network. sim.launch.py and
replay.launch.py include it; robots connect to tcp://127.0.0.1:<link_port>.

NOT RUN in this project's environment (no `launch` package): tests/test_ros_launch_files.py checks
it statically.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.substitutions import ExecutableInPackage

PACKAGE = "spec_edge_cloud"
ARGUMENTS = {
    "target": "models/target",
    "target_profile": "",          # timing emulation of the target ("": real speed)
    "rtt_ms": "120",               # round trip the link emulator adds
    "verifier_port": "5555",
    "link_port": "5556",
}


def launch_file(name):
    return PythonLaunchDescriptionSource(os.path.join(get_package_share_directory(PACKAGE), "launch", name))


def generate_launch_description():
    arg = LaunchConfiguration
    verifier_endpoint = ["tcp://127.0.0.1:", arg("verifier_port")]
    cloud = IncludeLaunchDescription(
        launch_file("cloud.launch.py"),
        launch_arguments={"target": arg("target"), "target_profile": arg("target_profile"),
                          "bind": verifier_endpoint}.items())
    link = ExecuteProcess(
        cmd=[ExecutableInPackage("spec-edge-cloud", PACKAGE), "link",
             "--listen", ["tcp://127.0.0.1:", arg("link_port")], "--forward", verifier_endpoint,
             "--rtt", [arg("rtt_ms"), "ms"]],
        output="screen")
    return LaunchDescription([DeclareLaunchArgument(k, default_value=v) for k, v in ARGUMENTS.items()] + [cloud, link])
