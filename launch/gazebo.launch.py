"""Go2 in Gazebo (gz-sim Harmonic) behind the project's topics, for users with a ROS 2 + gz install.

NOT RUN in this project's environment (no gz, no `launch` package): tests/test_sim_gazebo_launch.py
checks it statically (syntax, package and executable names, arguments against config/gazebo.yaml).

    ros2 launch spec_edge_cloud gazebo.launch.py model_file:=/path/to/go2.sdf

Starts gz-sim with `world`, spawns the Go2 model, and bridges (ros_gz_bridge) the model's gz topics
to the ones the embedded MuJoCo sim uses: /cmd_vel (ROS -> gz), /camera/image_raw, /odom and
/clock (gz -> ROS). Every launch argument and its default comes from config/gazebo.yaml.
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "spec_edge_cloud"
CONFIG = ("config", "gazebo.yaml")
DESCRIPTIONS = {   # one per key of config/gazebo.yaml (tests/test_sim_gazebo_launch.py checks)
    "world": "gz world to load (a file path, or a world name gz knows, e.g. empty.sdf)",
    "model_file": "a Go2 SDF/URDF with gz plugins: camera sensor, velocity interface on cmd_vel, odometry",
    "model_name": "the spawned model's name",
    "spawn_z": "spawn height (m)",
    "gz_cmd_vel_topic": "the model's gz velocity topic, bridged from /cmd_vel",
    "gz_image_topic": "the model's gz camera topic, bridged to /camera/image_raw",
    "gz_odom_topic": "the model's gz odometry topic, bridged to /odom",
}


def load_defaults():
    path = os.path.join(get_package_share_directory(PACKAGE), *CONFIG)
    with open(path) as f:
        return yaml.safe_load(f)["gazebo"]["ros__parameters"]


def generate_launch_description():
    defaults = load_defaults()
    arguments = [DeclareLaunchArgument(name, default_value=str(value), description=DESCRIPTIONS[name])
                 for name, value in defaults.items()]
    cfg = {name: LaunchConfiguration(name) for name in defaults}

    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            os.path.join(get_package_share_directory("ros_gz_sim"), "launch", "gz_sim.launch.py")),
        launch_arguments={"gz_args": ["-r ", cfg["world"]]}.items())

    spawn = Node(
        package="ros_gz_sim", executable="create", output="screen",
        arguments=["-name", cfg["model_name"], "-file", cfg["model_file"], "-z", cfg["spawn_z"]])

    bridge = Node(
        package="ros_gz_bridge", executable="parameter_bridge", output="screen",
        arguments=[
            [cfg["gz_cmd_vel_topic"], "@geometry_msgs/msg/Twist]gz.msgs.Twist"],
            [cfg["gz_image_topic"], "@sensor_msgs/msg/Image[gz.msgs.Image"],
            [cfg["gz_odom_topic"], "@nav_msgs/msg/Odometry[gz.msgs.Odometry"],
            "/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock",
        ],
        remappings=[
            (cfg["gz_cmd_vel_topic"], "/cmd_vel"),
            (cfg["gz_image_topic"], "/camera/image_raw"),
            (cfg["gz_odom_topic"], "/odom"),
        ],
        parameters=[{"use_sim_time": True}])

    return LaunchDescription(arguments + [gz_sim, spawn, bridge])
