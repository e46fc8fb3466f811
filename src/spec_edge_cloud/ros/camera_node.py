"""ROS camera node: one image stream for the draft node, whatever the camera is.

Publishes `output_topic` (sensor_msgs/Image, rgb8, resized to width x height) and, if asked,
`output_topic/compressed` (sensor_msgs/CompressedImage, JPEG), both with sensor-data QoS, at
`rate_hz`, each stamped with its capture time (time.time(), the clock of every latency figure).

Sources (parameter `source`):
  topic   a ROS image topic (`input_topic`, Image or, with `input_compressed`, CompressedImage):
          the freshest message is converted, resized and re-published; its own stamp is kept
  opencv  an OpenCV device ("0", "/dev/video0") or video file (`device`), looped with `loop`
  bag     Image/CompressedImage messages of `bag_topic` in a rosbag2 (`bag_path`), looped with `loop`
  go2     the Go2 front camera through unitree_sdk2py's VideoClient (JPEG, published as it comes)
"""
from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from . import images
from .camera_sources import BagSource, Frame, Go2Source, OpenCVSource
from .spin import run_node

SOURCES = ("topic", "opencv", "bag", "go2")
# Every parameter of the node, with its default (mirrored in config/robot.yaml, camera_node).
PARAMETERS = {
    "source": "opencv",
    "rate_hz": 10.0,               # frames published per second
    "width": 224,                  # output size in pixels; 0 keeps the source's
    "height": 224,
    "output_topic": "/camera/image_raw",
    "publish_compressed": True,    # also publish output_topic/compressed (JPEG)
    "jpeg_quality": 85,
    "frame_id": "camera",
    "input_topic": "/image",       # source topic
    "input_compressed": False,
    "device": "0",                 # source opencv
    "bag_path": "",                # source bag
    "bag_topic": "/camera/image_raw",
    "loop": True,                  # sources opencv (files) and bag: start again at the end
    "go2_interface": "eth0",       # source go2
    "go2_domain_id": 0,
}


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_node")
        p = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        if p["source"] not in SOURCES:
            raise ValueError(f"parameter source must be one of {SOURCES}, got {p['source']!r}")
        if not p["rate_hz"] > 0:
            raise ValueError(f"parameter rate_hz must be positive, got {p['rate_hz']}")
        if p["width"] < 0 or p["height"] < 0:
            raise ValueError(f"parameters width/height must be >= 0, got {p['width']}x{p['height']}")
        self.p = p
        self.raw_pub = self.create_publisher(Image, p["output_topic"], qos_profile_sensor_data)
        self.compressed_pub = (self.create_publisher(CompressedImage, p["output_topic"] + "/compressed",
                                                     qos_profile_sensor_data)
                               if p["publish_compressed"] else None)
        self.source = None
        self._latest: Frame | None = None
        self._exhausted = False
        if p["source"] == "topic":
            msg_type = CompressedImage if p["input_compressed"] else Image
            self.create_subscription(msg_type, p["input_topic"], self._on_input, qos_profile_sensor_data)
        elif p["source"] == "opencv":
            self.source = OpenCVSource(p["device"], p["loop"])
        elif p["source"] == "bag":
            self.source = BagSource(p["bag_path"], p["bag_topic"], p["loop"])
        else:
            self.source = Go2Source(p["go2_interface"], p["go2_domain_id"])
        self.create_timer(1.0 / p["rate_hz"], self._tick)
        self.get_logger().info(f"camera node: source {p['source']}, {p['rate_hz']:g} Hz -> {p['output_topic']}")

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
        self.raw_pub.publish(images.image_msg(rgb, frame.capture_t, p["frame_id"]))
        if self.compressed_pub is not None:
            # the camera's own JPEG when the size is unchanged: no second lossy encoding
            jpeg = frame.jpeg if frame.jpeg is not None and rgb is source_rgb else \
                images.jpeg_from_rgb(rgb, p["jpeg_quality"])
            self.compressed_pub.publish(images.compressed_msg(jpeg, frame.capture_t, p["frame_id"]))

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
