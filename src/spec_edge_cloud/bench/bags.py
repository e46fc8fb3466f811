"""Camera + instruction bags: rosbag2 MCAP written and read with `rosbags`, no ROS install needed.

Live recording (ros/record.py) and simulator recording (bench/sim_bag.py) both write through
`BagWriter`, so their bags are interchangeable; the replay benchmark reads them back with
`read_frames` as (capture stamp, image, instruction in force) in capture order.

Topics: /camera/image_raw sensor_msgs/Image (rgb8, or bgr8 converted on reading) and
/instruction std_msgs/String. A frame takes the latest instruction logged at or before it; frames
seen before any instruction have no task and are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

IMAGE_TOPIC = "/camera/image_raw"
INSTRUCTION_TOPIC = "/instruction"
IMAGE_TYPE = "sensor_msgs/msg/Image"
STRING_TYPE = "std_msgs/msg/String"
CAMERA_FRAME = "camera"   # the robot camera's one frame id: bags, the camera node and the sim node

_TYPES = get_typestore(Stores.ROS2_KILTED)


class BagError(ValueError):
    """A bag that cannot be written or replayed; the message says what is wrong."""


@dataclass(frozen=True)
class Frame:
    stamp_ns: int          # the image header's stamp: when the frame was captured
    image: np.ndarray | None  # HxWx3 uint8 RGB (None: a text prompt replayed without a camera, bench/replay.py)
    instruction: str       # the task in force when it was captured


def _stamp(ns: int):
    Time = _TYPES.types["builtin_interfaces/msg/Time"]
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class BagWriter:
    """Append images and instructions to a new MCAP bag; `with BagWriter(path) as bag: ...`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists: a bag is never overwritten, choose a new --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._image = self._writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=_TYPES)
        self._text = self._writer.add_connection(INSTRUCTION_TOPIC, STRING_TYPE, typestore=_TYPES)
        self.images = 0
        self.instructions = 0

    def image(self, stamp_ns: int, image: np.ndarray, frame_id: str = CAMERA_FRAME,
              log_ns: int | None = None) -> None:
        """One rgb8 frame stamped `stamp_ns` (capture time); logged at `log_ns` (default: the stamp)."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8):
            raise BagError(f"an image must be HxWx3 uint8 RGB, got {getattr(image, 'shape', type(image))}")
        Image, Header = _TYPES.types[IMAGE_TYPE], _TYPES.types["std_msgs/msg/Header"]
        h, w = image.shape[:2]
        msg = Image(header=Header(stamp=_stamp(stamp_ns), frame_id=frame_id), height=h, width=w,
                    encoding="rgb8", is_bigendian=0, step=3 * w,
                    data=np.ascontiguousarray(image).reshape(-1))
        self._writer.write(self._image, log_ns if log_ns is not None else stamp_ns,
                           _TYPES.serialize_cdr(msg, IMAGE_TYPE))
        self.images += 1

    def instruction(self, log_ns: int, text: str) -> None:
        if not text.strip():
            raise BagError("an empty instruction is not a task")
        String = _TYPES.types[STRING_TYPE]
        self._writer.write(self._text, log_ns, _TYPES.serialize_cdr(String(data=text), STRING_TYPE))
        self.instructions += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_array(msg) -> np.ndarray:
    """HxWx3 RGB from a sensor_msgs/Image (a rosbags or an rclpy message); BagError if unusable."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise BagError(f"image encoding {msg.encoding!r} is not supported (rgb8 or bgr8)")
    if msg.step < 3 * msg.width or len(msg.data) < msg.step * msg.height:
        raise BagError(f"image of {msg.width}x{msg.height} with step {msg.step} holds only {len(msg.data)} bytes")
    rows = np.frombuffer(msg.data, dtype=np.uint8)[: msg.step * msg.height].reshape(msg.height, msg.step)
    image = rows[:, : 3 * msg.width].reshape(msg.height, msg.width, 3)
    return np.ascontiguousarray(image[..., ::-1] if msg.encoding == "bgr8" else image)


def read_frames(path: str | Path, limit: int | None = None) -> list[Frame]:
    """Every frame with its instruction, in log order; BagError if the bag has none to replay."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    frames: list[Frame] = []
    instruction = None
    try:
        with AnyReader([path], default_typestore=_TYPES) as reader:
            wanted = [c for c in reader.connections if c.topic in (IMAGE_TOPIC, INSTRUCTION_TOPIC)]
            for conn, _log_ns, raw in reader.messages(connections=wanted):
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == INSTRUCTION_TOPIC:
                    instruction = msg.data
                elif instruction is not None:
                    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    frames.append(Frame(stamp, image_array(msg), instruction))
                    if limit is not None and len(frames) >= limit:
                        break
    except BagError:
        raise
    except (AnyReaderError, ValueError, KeyError, IndexError, OSError) as exc:  # rosbags' errors for a corrupt file
        raise BagError(f"{path} could not be read ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise BagError(f"{path} has no {IMAGE_TOPIC} frame after an {INSTRUCTION_TOPIC} message")
    return frames
