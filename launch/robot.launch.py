"""The robot side on a real Go2: camera node (Go2 front camera), draft node, command node (Go2 SDK).

    ros2 launch spec_edge_cloud robot.launch.py endpoint:=tcp://CLOUD:5555 go2_interface:=eth0

Built from config/up_robot.yaml (also `spec-edge-cloud up up_robot`); parameters in config/robot.yaml.
NOT RUN on a Go2 here (none is attached); tests/test_ros_launch_scenarios.py checks that it starts
the same processes with the same parameters as `up up_robot`.
"""
from spec_edge_cloud.ros.launch_scenario import scenario_launch_description


def generate_launch_description():
    return scenario_launch_description("up_robot")
