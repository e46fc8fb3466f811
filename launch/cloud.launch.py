"""The cloud side: the verifier node (target model + exit heads behind ZeroMQ).

    ros2 launch spec_edge_cloud cloud.launch.py bind:=tcp://0.0.0.0:5555 target:=/models/target

Built from config/up_cloud.yaml (also `spec-edge-cloud up up_cloud`); parameters in config/cloud.yaml
(`verifier_node`): off loopback set its CURVE keys there. Hosts without ROS run the same server with
`spec-edge-cloud verifier --config config/cloud.yaml`. tests/test_ros_launch_cloud.py runs it.
"""
from spec_edge_cloud.ros.launch_scenario import scenario_launch_description


def generate_launch_description():
    return scenario_launch_description("up_cloud")
