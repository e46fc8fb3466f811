"""Record the live camera and instruction topics into a bag: a thin rclpy adapter over bench/bags.py.

Subscribes:  /camera/image_raw  sensor_msgs/Image (rgb8 or bgr8), sensor-data QoS
             /instruction       std_msgs/String, reliable + transient local (gets a latched task)
Each image keeps its header stamp (capture time) and is logged at its arrival time on this node's
clock; images in other encodings are skipped with a warning, never written half-converted.
"""
from __future__ import annotations

import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from spec_edge_cloud.bench.bags import IMAGE_TOPIC, INSTRUCTION_TOPIC, BagError, BagWriter, image_array

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RecorderNode(Node):
    def __init__(self, bag: BagWriter, name: str = "bag_recorder") -> None:
        super().__init__(name)
        self.bag = bag
        self.create_subscription(Image, IMAGE_TOPIC, self._on_image, qos_profile_sensor_data)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, msg: Image) -> None:
        try:
            image = image_array(msg)
        except BagError as e:
            self.get_logger().warning(f"skipped an image: {e}")
            return
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.bag.image(stamp, image, msg.header.frame_id or "camera", log_ns=self._now_ns())

    def _on_instruction(self, msg: String) -> None:
        if msg.data.strip():
            self.bag.instruction(self._now_ns(), msg.data)


def record(out: str | Path, duration_s: float | None = None, max_frames: int | None = None) -> BagWriter:
    """Record until `duration_s` seconds pass, `max_frames` images are written, or Ctrl-C."""
    bag = BagWriter(out)
    rclpy.init()
    node = RecorderNode(bag)
    deadline = time.monotonic() + duration_s if duration_s else float("inf")
    try:
        while rclpy.ok() and time.monotonic() < deadline and (max_frames is None or bag.images < max_frames):
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        bag.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return bag
