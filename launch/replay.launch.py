"""A recorded bag through the robot pipeline: the camera node replays the bag's images, the draft and
command nodes (twist backend) answer them, the verifier runs on loopback behind the link emulator.

    ros2 launch spec_edge_cloud replay.launch.py bag:=/path/to/bag
    ros2 topic pub --once /instruction std_msgs/String "data: go to the red ball"

Built from config/up_replay.yaml (also `spec-edge-cloud up up_replay`); the default bag is the shipped
one. tests/test_ros_launch_replay.py runs it through launch.LaunchService.
"""
from spec_edge_cloud.ros.launch_scenario import scenario_launch_description


def generate_launch_description():
    return scenario_launch_description("up_replay")
