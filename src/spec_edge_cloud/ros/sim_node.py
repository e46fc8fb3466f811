"""ROS node for the embedded MuJoCo Go2 (sim/): a thin adapter over sim.session.SimSession.

Publishes:   camera/image_raw   sensor_msgs/Image rgb8, sensor-data QoS, camera_rate_hz of sim time,
                                stamped with the node clock when the frame is rendered, frame `camera`
             camera/camera_info sensor_msgs/CameraInfo beside each image (the head camera's pinhole K)
             odom               nav_msgs/Odometry (odom -> base_link), every 50 Hz tick
             /clock             rosgraph_msgs/Clock, sim time, every tick (global: what use_sim_time reads)
             instruction        std_msgs/String, transient local, once per episode (publish_instruction)
             sim/episode        std_msgs/String, JSON outcome when an episode ends:
                                {"outcome": "success"|"fail", "reason", "distance", "time", "touched",
                                 "success", "seed", "instruction"}
Subscribes:  cmd_vel            geometry_msgs/Twist -> the velocity interface (held 1 s, then stop)
             sim/reset          std_msgs/Int64: start a new episode with this seed
Topic names but /clock are relative: under a namespace (`-r __ns:=/robot1`) each robot has its own.
Parameters:  see PARAMETERS (also config/sim.yaml); all are read at start-up only (read_only).
"""
from __future__ import annotations

import json
import time

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.clock import Clock, ClockType
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Int64, String

from spec_edge_cloud.sim import robot, scene
from spec_edge_cloud.sim.session import Pacer, SimSession
from spec_edge_cloud.sim.vocab import check_goal, parse_instruction
from . import images
from .params import Param, declare
from .spin import run_node

PARAMETERS = {
    "seed": Param(0, "layout (and goal, unless given) of the first episode", True, (0, None)),
    "image_size": Param(128, "square head-camera images, pixels a side", True, (16, scene.MAX_IMAGE_SIZE)),
    "camera_rate_hz": Param(10.0, "frames per second of sim time", True, (0.1, 100.0)),
    "real_time_factor": Param(1.0, "sim seconds per wall second; <= 0 runs as fast as it can", True),
    "instruction": Param("", 'the task, "go to the red ball"; or give colour and object', True),
    "colour": Param("", "the goal's colour (with object; empty: the seed draws the goal)", True),
    "object": Param("", "the goal's shape (with colour)", True),
    "publish_instruction": Param(False, "publish the task on instruction at each episode start", True),
    "timeout_s": Param(60.0, "an episode fails after this much sim time", True, (0.1, None)),
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
ODOM_FRAME, BASE_FRAME = "odom", "base_link"


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
    NODE_NAME = "sim_node"

    def __init__(self) -> None:
        super().__init__(self.NODE_NAME)
        p = declare(self, PARAMETERS)
        self.goal = goal_from_parameters(p["instruction"], p["colour"], p["object"])
        self.publish_instruction = p["publish_instruction"]
        self.session = SimSession(p["seed"], self.goal, p["image_size"], p["camera_rate_hz"], p["timeout_s"])
        self.pacer = Pacer(p["real_time_factor"], time.monotonic())
        self.image_pub = self.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", qos_profile_sensor_data)
        self.odom_pub = self.create_publisher(Odometry, "odom", RELIABLE)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", RELIABLE)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.episode_pub = self.create_publisher(String, "sim/episode", RELIABLE)
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, RELIABLE)
        self.create_subscription(Int64, "sim/reset", self._on_reset, RELIABLE)
        # the simulation paces itself on the steady clock: under use_sim_time the node clock follows
        # the /clock this node publishes, so a timer on it would wait for itself
        self.create_timer(0.005, self._run_due_ticks, clock=Clock(clock_type=ClockType.STEADY_TIME))
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
        t = self.get_clock().now().nanoseconds * 1e-9
        self.image_pub.publish(images.image_msg(frame, t, images.CAMERA_FRAME))
        # square images: the vertical field of view is the horizontal one
        self.info_pub.publish(images.camera_info(frame.shape[1], frame.shape[0], t, images.CAMERA_FRAME,
                                                 robot.HEAD_CAMERA_FOVY_DEG))

    def _publish_state(self) -> None:
        sim_time = self.session.world.time
        clock = ClockMsg()
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
