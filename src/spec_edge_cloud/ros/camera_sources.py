"""Where the camera node's frames come from: an OpenCV device or video file, a rosbag2 file, or the
Go2's front camera. (A ROS image topic, the fourth source, is a subscription inside the node.)

Each source is pulled by the node's timer: `read()` returns the next Frame, stamped with the
wall-clock time it was captured (time.time(), the clock every latency in the project is measured
on), or None when nothing new is there. Sources that only hold JPEG bytes hand them over as they
are, so the node can publish the compressed image without re-encoding it.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import rgb_from_jpeg, rgb_from_raw

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray | None   # HxWx3 uint8 RGB, or None when the source only has JPEG bytes
    jpeg: bytes | None
    capture_t: float

    def image(self) -> np.ndarray:
        return self.rgb if self.rgb is not None else rgb_from_jpeg(self.jpeg)


class OpenCVSource:
    """A camera device (an index such as "0", or /dev/videoN) or a video file, looped if asked."""

    def __init__(self, device: str, loop: bool = True) -> None:
        import cv2
        self._cv2 = cv2
        self.device, self.loop = device, loop
        self.is_file = not device.isdigit() and not device.startswith("/dev/")
        if self.is_file and not Path(device).is_file():
            raise FileNotFoundError(f"camera source: video file {device!r} not found")
        self.capture = cv2.VideoCapture(int(device) if device.isdigit() else device)
        if not self.capture.isOpened():
            raise ValueError(f"camera source: OpenCV cannot open {device!r}")

    def read(self) -> Frame | None:
        ok, bgr = self.capture.read()
        if not ok and self.is_file and self.loop:
            self.capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.capture.read()
        if not ok:
            return None
        return Frame(self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB), None, time.time())

    def close(self) -> None:
        self.capture.release()


class BagSource:
    """Image or CompressedImage messages of one topic of a rosbag2 (MCAP or sqlite3), read with
    `rosbags` (no ROS install needed), one per read, looped if asked. The frame is stamped when it
    is replayed: that is when the robot would have captured it."""

    def __init__(self, path: str, topic: str, loop: bool = True) -> None:
        from rosbags.typesys import Stores, get_typestore
        self.path, self.topic, self.loop = Path(path), topic, loop
        self._types = get_typestore(Stores.ROS2_KILTED)  # for bags that do not carry their message definitions
        if not self.path.exists():
            raise FileNotFoundError(f"camera source: bag {path!r} not found")
        with self._open() as reader:
            found = {c.topic: c.msgtype for c in reader.connections}
        if topic not in found:
            raise ValueError(f"camera source: bag {path} has no topic {topic!r} (it has {sorted(found)})")
        if found[topic] not in IMAGE_TYPES:
            raise ValueError(f"camera source: {topic} in {path} is {found[topic]}, not one of {IMAGE_TYPES}")
        self._messages = self._iterate()

    def _open(self):
        from rosbags.highlevel import AnyReader
        return AnyReader([self.path], default_typestore=self._types)

    def _iterate(self) -> Iterator[Frame]:
        while True:
            count = 0
            with self._open() as reader:
                connections = [c for c in reader.connections if c.topic == self.topic]
                for connection, _, raw in reader.messages(connections=connections):
                    msg = reader.deserialize(raw, connection.msgtype)
                    count += 1
                    if connection.msgtype.endswith("CompressedImage"):
                        yield Frame(None, bytes(msg.data), time.time())
                    else:
                        yield Frame(rgb_from_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data),
                                    None, time.time())
            if not self.loop or count == 0:
                return

    def read(self) -> Frame | None:
        return next(self._messages, None)

    def close(self) -> None:
        self._messages.close()


class Go2Source:
    """The Go2's front camera through unitree_sdk2py's VideoClient: one JPEG per request."""

    def __init__(self, interface: str, domain_id: int = 0, timeout_s: float = 1.0) -> None:
        from unitree_sdk2py.core.channel import ChannelFactoryInitialize
        from unitree_sdk2py.go2.video.video_client import VideoClient
        ChannelFactoryInitialize(domain_id, interface)
        self.client = VideoClient()
        self.client.SetTimeout(timeout_s)
        self.client.Init()
        self.failures = 0

    def read(self) -> Frame | None:
        t = time.time()  # stamped at the request: a stamp at the reply would hide the transfer from latencies
        code, data = self.client.GetImageSample()
        if code != 0 or not data:
            self.failures += 1
            return None
        return Frame(None, bytes(data), t)

    def close(self) -> None:
        pass
