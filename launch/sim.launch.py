"""The embedded MuJoCo Go2 with the whole pipeline on one machine, for ROS 2 installs: the sim node,
the robot nodes (robot.launch.py, camera off: the simulator is the camera; /cmd_vel to the sim), and
the verifier on loopback behind the link emulator (loopback_cloud.launch.py).

    ros2 launch spec_edge_cloud sim.launch.py mode:=cloud seed:=3

The same processes without ROS installed: `spec-edge-cloud up up_sim` (config/up_sim.yaml).
NOT RUN in this project's environment (no `launch` package): tests/test_ros_launch_files.py checks
it statically, and `up up_sim` runs the same nodes with the same parameter files.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "spec_edge_cloud"
ARGUMENTS = {
    "target": "models/target",
    "draft": "models/draft",
    "mode": "spec-ee-pre",
    "target_profile": "go2-orin-a100",   # the paper's Go2 timings, emulated ("": the models' own speed)
    "draft_profile": "go2-orin-a100",
    "rtt_ms": "120",                     # link emulator round trip
    "verifier_port": "5555",
    "link_port": "5556",
    "seed": "0",                         # the first episode's layout and goal
    "publish_instruction": "true",       # the sim gives the task at each episode start
}


def config(name):
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def launch_file(name):
    return PythonLaunchDescriptionSource(os.path.join(get_package_share_directory(PACKAGE), "launch", name))


def generate_launch_description():
    arg = LaunchConfiguration
    cloud = IncludeLaunchDescription(
        launch_file("loopback_cloud.launch.py"),
        launch_arguments={k: arg(k) for k in ("target", "target_profile", "rtt_ms", "verifier_port",
                                              "link_port")}.items())
    sim = Node(
        package=PACKAGE, executable="sim_node", output="screen",
        parameters=[config("sim.yaml"), {"seed": ParameterValue(arg("seed"), value_type=int),
                                         "publish_instruction": ParameterValue(arg("publish_instruction"),
                                                                               value_type=bool)}])
    robot = IncludeLaunchDescription(
        launch_file("robot.launch.py"),
        launch_arguments={"endpoint": ["tcp://127.0.0.1:", arg("link_port")], "draft": arg("draft"),
                          "mode": arg("mode"), "draft_profile": arg("draft_profile"), "camera": "false",
                          "backend": "twist"}.items())
    return LaunchDescription([DeclareLaunchArgument(k, default_value=v) for k, v in ARGUMENTS.items()]
                             + [cloud, sim, robot])
