"""ROS camera node: one image stream for the draft node, whatever the camera is.

Publishes `camera/image_raw` (sensor_msgs/Image, rgb8, resized to width x height), beside it
`camera/camera_info` (sensor_msgs/CameraInfo: the size, and a pinhole K from `horizontal_fov_deg`,
or zeros: uncalibrated) and, if asked, `camera/image_raw/compressed` (sensor_msgs/CompressedImage,
JPEG), all with sensor-data QoS, at `rate_hz`, in frame `frame_id`, each stamped on the node clock at
capture (so `use_sim_time` stamps in sim time, the clock the draft node measures latency on). Topic
names are relative: a namespace or a remapping (`-r camera/image_raw:=/front/image`) moves them.

Sources (parameter `source`):
  topic   a ROS image topic (`image`, remap it; Image or, with `input_compressed`, CompressedImage):
          the freshest message is converted, resized and re-published; its own stamp is kept
  opencv  an OpenCV device ("0", "/dev/video0") or video file (`device`), looped with `loop`
  bag     Image/CompressedImage messages of `bag_topic` in a rosbag2 (`bag_path`), looped with `loop`
  go2     the Go2 front camera through unitree_sdk2py's VideoClient (JPEG, published as it comes)
"""
from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from . import images
from .camera_sources import BagSource, Frame, Go2Source, OpenCVSource
from .params import Param, declare
from .share import resolve_path
from .spin import run_node

SOURCES = ("topic", "opencv", "bag", "go2")
IMAGE_TOPIC, INFO_TOPIC, INPUT_TOPIC = "camera/image_raw", "camera/camera_info", "image"
# Every parameter of the node (mirrored in config/robot.yaml, camera_node); all but jpeg_quality
# are read at start-up only.
PARAMETERS = {
    "source": Param("opencv", "where frames come from", True, choices=SOURCES),
    "rate_hz": Param(10.0, "frames published per second", True, (0.1, 1000.0)),
    "width": Param(224, "output width in pixels (0: the source's)", True, (0, 8192)),
    "height": Param(224, "output height in pixels (0: the source's)", True, (0, 8192)),
    "publish_compressed": Param(True, "also publish camera/image_raw/compressed (JPEG)", True),
    "jpeg_quality": Param(85, "JPEG quality of the compressed image", range=(1, 100)),
    "frame_id": Param(images.CAMERA_FRAME, "frame of the images and the CameraInfo", True),
    "horizontal_fov_deg": Param(0.0, "horizontal field of view for CameraInfo's K (0: uncalibrated, K zero)",
                                True, (0.0, 179.0)),
    "input_compressed": Param(False, "source topic: the input is a CompressedImage", True),
    "device": Param("0", "source opencv: a device index, /dev/videoN, or a video file", True),
    "bag_path": Param("", "source bag: a rosbag2 directory or .mcap file", True),
    "bag_topic": Param("/camera/image_raw", "source bag: the image topic in the bag", True),
    "loop": Param(True, "sources opencv (files) and bag: start again at the end", True),
    "go2_interface": Param("eth0", "source go2: network interface wired to the Go2", True),
    "go2_domain_id": Param(0, "source go2: DDS domain of the Go2", True, (0, 232)),
}


class CameraNode(Node):
    NODE_NAME = "camera_node"

    def __init__(self) -> None:
        super().__init__(self.NODE_NAME)
        p = declare(self, PARAMETERS)
        self.p = p
        self.raw_pub = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, INFO_TOPIC, qos_profile_sensor_data)
        self.compressed_pub = (self.create_publisher(CompressedImage, IMAGE_TOPIC + "/compressed",
                                                     qos_profile_sensor_data)
                               if p["publish_compressed"] else None)
        self.source = None
        self._latest: Frame | None = None
        self._exhausted = False
        if p["source"] == "topic":
            msg_type = CompressedImage if p["input_compressed"] else Image
            self.create_subscription(msg_type, INPUT_TOPIC, self._on_input, qos_profile_sensor_data)
        elif p["source"] == "opencv":
            self.source = OpenCVSource(p["device"], p["loop"])
        elif p["source"] == "bag":
            self.source = BagSource(resolve_path(p["bag_path"], "bag_path"), p["bag_topic"], p["loop"])
        else:
            self.source = Go2Source(p["go2_interface"], p["go2_domain_id"])
        self.create_timer(1.0 / p["rate_hz"], self._tick)
        self.get_logger().info(f"camera node: source {p['source']}, {p['rate_hz']:g} Hz -> "
                               f"{self.raw_pub.topic_name}")

    def _on_input(self, msg) -> None:
        t = images.seconds(msg.header.stamp)
        try:
            if isinstance(msg, CompressedImage):
                self._latest = Frame(None, bytes(msg.data), t)
            else:
                self._latest = Frame(images.rgb_from_image(msg), None, t)
        except ValueError as e:
            self.get_logger().warning(f"dropped an input image: {e}")

    def _next_frame(self) -> Frame | None:
        if self.source is None:
            frame, self._latest = self._latest, None  # each input frame goes out once
            return frame
        frame = self.source.read()
        if frame is None and not self._exhausted and self.p["source"] in ("opencv", "bag"):
            self._exhausted = True
            self.get_logger().info("camera source has no more frames")
        return frame

    def _tick(self) -> None:
        frame = self._next_frame()
        if frame is None:
            return
        p = self.p
        try:
            source_rgb = frame.image()
        except ValueError as e:
            self.get_logger().warning(f"dropped a frame: {e}")
            return
        rgb = images.resize(source_rgb, p["width"], p["height"])
        t = frame.capture_t if self.source is None else self._node_time(frame.capture_t)
        self.raw_pub.publish(images.image_msg(rgb, t, p["frame_id"]))
        self.info_pub.publish(images.camera_info(rgb.shape[1], rgb.shape[0], t, p["frame_id"],
                                                 p["horizontal_fov_deg"]))
        if self.compressed_pub is not None:
            # the camera's own JPEG when the size is unchanged: no second lossy encoding
            jpeg = frame.jpeg if frame.jpeg is not None and rgb is source_rgb else \
                images.jpeg_from_rgb(rgb, self.get_parameter("jpeg_quality").value)
            self.compressed_pub.publish(images.compressed_msg(jpeg, t, p["frame_id"]))

    def _node_time(self, capture_wall_t: float) -> float:
        """A source's capture time (time.time()) on the node clock: now, less the frame's age."""
        age = max(0.0, time.time() - capture_wall_t)
        return self.get_clock().now().nanoseconds * 1e-9 - age

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
