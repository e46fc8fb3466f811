"""A recorded bag through the robot pipeline, for ROS 2 installs: the camera node plays the bag's
images (robot.launch.py with camera_source:=bag, backend:=twist), the verifier answers on
loopback behind the link emulator (loopback_cloud.launch.py).

    ros2 launch spec_edge_cloud replay.launch.py bag:=data/bags/sim_small
    ros2 topic pub --once /instruction std_msgs/String "data: go to the red ball"

The same processes without ROS installed: `spec-edge-cloud up up_replay`. NOT RUN in this
project's environment (no `launch` package): tests/test_ros_launch_files.py checks it statically.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "spec_edge_cloud"
ARGUMENTS = {
    "bag": "data/bags/sim_small",        # a rosbag2 directory or .mcap file with /camera/image_raw
    "target": "models/target",
    "draft": "models/draft",
    "mode": "spec-ee-pre",
    "target_profile": "",
    "draft_profile": "",
    "rtt_ms": "120",
    "verifier_port": "5555",
    "link_port": "5556",
}


def launch_file(name):
    return PythonLaunchDescriptionSource(os.path.join(get_package_share_directory(PACKAGE), "launch", name))


def generate_launch_description():
    arg = LaunchConfiguration
    cloud = IncludeLaunchDescription(
        launch_file("loopback_cloud.launch.py"),
        launch_arguments={k: arg(k) for k in ("target", "target_profile", "rtt_ms", "verifier_port",
                                              "link_port")}.items())
    robot = IncludeLaunchDescription(
        launch_file("robot.launch.py"),
        launch_arguments={"endpoint": ["tcp://127.0.0.1:", arg("link_port")], "draft": arg("draft"),
                          "mode": arg("mode"), "draft_profile": arg("draft_profile"), "camera_source": "bag",
                          "bag_path": arg("bag"), "backend": "twist"}.items())
    return LaunchDescription([DeclareLaunchArgument(k, default_value=v) for k, v in ARGUMENTS.items()]
                             + [cloud, robot])
