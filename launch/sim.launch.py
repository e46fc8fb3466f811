"""The embedded MuJoCo Go2 with the whole pipeline on one machine: the sim node (the camera, /cmd_vel
to its robot), the draft and command nodes, and the verifier on loopback behind the link emulator.

    ros2 launch spec_edge_cloud sim.launch.py mode:=cloud seed:=3

Built from config/up_sim.yaml, which `spec-edge-cloud up up_sim` and the demo run too: the vars are
this file's arguments (`ros2 launch spec_edge_cloud sim.launch.py --show-args` lists them).
tests/test_ros_launch_sim.py runs it through launch.LaunchService.
"""
from spec_edge_cloud.ros.launch_scenario import scenario_launch_description


def generate_launch_description():
    return scenario_launch_description("up_sim")
