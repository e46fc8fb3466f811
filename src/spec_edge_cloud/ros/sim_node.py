"""ROS node for the embedded MuJoCo Go2 (sim/): a thin adapter over sim.session.SimSession.

Publishes:   /camera/image_raw  sensor_msgs/Image rgb8, sensor-data QoS, camera_rate_hz of sim time,
                                stamped with the node clock when the frame is rendered
             /odom              nav_msgs/Odometry (odom -> base_link), every 50 Hz tick
             /clock             rosgraph_msgs/Clock, sim time, every tick
             /instruction       std_msgs/String, transient local, once per episode (publish_instruction)
             /sim/episode       std_msgs/String, JSON outcome when an episode ends:
                                {"outcome": "success"|"fail", "reason", "distance", "time", "touched",
                                 "success", "seed", "instruction"}
Subscribes:  /cmd_vel           geometry_msgs/Twist -> the velocity interface (held 1 s, then stop)
             /sim/reset         std_msgs/Int64: start a new episode with this seed
Parameters:  see PARAMETERS (also config/sim.yaml).
"""
from __future__ import annotations

import json
import time

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Int64, String

from spec_edge_cloud.sim.session import Pacer, SimSession
from spec_edge_cloud.sim.vocab import check_goal, parse_instruction
from .spin import run_node

PARAMETERS = {
    "seed": 0,                     # layout (and goal, unless given) of the first episode
    "image_size": 128,             # square head-camera images, pixels a side
    "camera_rate_hz": 10.0,        # frames per second of sim time
    "real_time_factor": 1.0,       # sim seconds per wall second; <= 0 runs as fast as it can
    "instruction": "",             # "go to the red ball"; or give colour and object
    "colour": "",
    "object": "",
    "publish_instruction": False,  # publish the task on /instruction at each episode start
    "timeout_s": 60.0,             # episode fails after this much sim time
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_FRAME, ODOM_FRAME, BASE_FRAME = "head_camera", "odom", "base_link"


def goal_from_parameters(instruction: str, colour: str, obj: str) -> tuple[str, str] | None:
    """The goal the parameters ask for, or None to let the seed draw it."""
    if instruction:
        goal = parse_instruction(instruction)
        if (colour or obj) and (colour, obj) != goal:
            raise ValueError(f"instruction {instruction!r} disagrees with colour={colour!r} object={obj!r}")
        return goal
    if colour or obj:
        check_goal(colour, obj)
        return colour, obj
    return None


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        p = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        self.goal = goal_from_parameters(p["instruction"], p["colour"], p["object"])
        self.publish_instruction = p["publish_instruction"]
        self.session = SimSession(p["seed"], self.goal, p["image_size"], p["camera_rate_hz"], p["timeout_s"])
        self.pacer = Pacer(p["real_time_factor"], time.monotonic())
        self.image_pub = self.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.odom_pub = self.create_publisher(Odometry, "/odom", RELIABLE)
        self.clock_pub = self.create_publisher(Clock, "/clock", RELIABLE)
        self.instruction_pub = self.create_publisher(String, "/instruction", LATCHED)
        self.episode_pub = self.create_publisher(String, "/sim/episode", RELIABLE)
        self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, RELIABLE)
        self.create_subscription(Int64, "/sim/reset", self._on_reset, RELIABLE)
        self.create_timer(0.005, self._run_due_ticks)
        self._announce()

    def close(self) -> None:
        self.session.close()

    def _announce(self) -> None:
        self.get_logger().info(f"episode seed {self.session.seed}: {self.session.instruction}")
        if self.publish_instruction:
            self.instruction_pub.publish(String(data=self.session.instruction))

    def _on_cmd_vel(self, msg: Twist) -> None:
        try:
            self.session.command(msg.linear.x, msg.linear.y, msg.angular.z)
        except ValueError as e:
            self.get_logger().warning(f"ignored /cmd_vel: {e}")

    def _on_reset(self, msg: Int64) -> None:
        self.session.reset(int(msg.data), self.goal)
        self._announce()

    def _run_due_ticks(self) -> None:
        for _ in range(self.pacer.due(time.monotonic())):
            step = self.session.step()
            if step.frame is not None:
                self._publish_image(step.frame)
            self._publish_state()
            if step.outcome is not None:
                record = json.loads(step.outcome.to_json())
                record.update(seed=self.session.seed, instruction=self.session.instruction)
                self.episode_pub.publish(String(data=json.dumps(record, sort_keys=True)))
                self.get_logger().info(f"episode over: {record}")

    def _publish_image(self, frame) -> None:
        msg = Image()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = IMAGE_FRAME
        msg.height, msg.width = frame.shape[0], frame.shape[1]
        msg.encoding = "rgb8"
        msg.step = 3 * frame.shape[1]
        msg.data = frame.tobytes()
        self.image_pub.publish(msg)

    def _publish_state(self) -> None:
        sim_time = self.session.world.time
        clock = Clock()
        clock.clock.sec = int(sim_time)
        clock.clock.nanosec = int(round((sim_time - int(sim_time)) * 1e9)) % 1_000_000_000
        self.clock_pub.publish(clock)
        position, quat, linear, angular = self.session.world.odometry()
        odom = Odometry()
        odom.header.stamp = self.get_clock().now().to_msg()
        odom.header.frame_id, odom.child_frame_id = ODOM_FRAME, BASE_FRAME
        pose = odom.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
        pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(v) for v in quat)
        twist = odom.twist.twist
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in linear)
        twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in angular)
        self.odom_pub.publish(odom)


def main(args: list[str] | None = None) -> None:
    run_node(SimNode, args)


if __name__ == "__main__":
    main()
