"""Image messages <-> numpy RGB arrays, without cv_bridge (not installable from PyPI).

The models take HxWx3 uint8 RGB; cameras and bags hand over rgb8, bgr8, mono8, rgba8, bgra8 or JPEG.
Every conversion lives here so that the camera node, the draft node and the tests agree on it.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spec_edge_cloud.bench.bags import CAMERA_FRAME  # noqa: F401  (the one frame id, for the nodes)

# encoding -> (channels, cv2 conversion to RGB or None)
ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}


def rgb_from_raw(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """An HxWx3 RGB array from the fields of a sensor_msgs/Image; ValueError if they do not add up."""
    if encoding not in ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} is not supported (use one of {', '.join(ENCODINGS)})")
    channels, conversion = ENCODINGS[encoding]
    if height <= 0 or width <= 0 or step < width * channels:
        raise ValueError(f"bad image geometry: {width}x{height}, step {step}, {channels} channels")
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buf.size < step * height:
        raise ValueError(f"image data has {buf.size} bytes, {width}x{height} with step {step} needs {step * height}")
    rows = buf[: step * height].reshape(height, step)[:, : width * channels]
    image = rows.reshape(height, width, channels)
    return np.ascontiguousarray(image if conversion is None else cv2.cvtColor(image, conversion))


def rgb_from_image(msg: Image) -> np.ndarray:
    return rgb_from_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)


def rgb_from_jpeg(data) -> np.ndarray:
    """Decode JPEG (or PNG) bytes to RGB; ValueError if they are not an image."""
    buf = np.frombuffer(memoryview(bytes(data)).cast("B"), dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ValueError(f"compressed image of {buf.size} bytes could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_from_rgb(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to width x height (0 keeps that side as it is); area averaging when shrinking."""
    w, h = width or image.shape[1], height or image.shape[0]
    if (w, h) == (image.shape[1], image.shape[0]):
        return image
    shrink = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def stamp(t: float) -> Time:
    """A time in seconds (the node clock's) as a header stamp."""
    sec = int(t)
    return Time(sec=sec, nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def seconds(stamp_msg: Time) -> float:
    return stamp_msg.sec + stamp_msg.nanosec * 1e-9


def image_msg(image: np.ndarray, t: float, frame_id: str) -> Image:
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp(t), frame_id
    msg.height, msg.width = image.shape[0], image.shape[1]
    msg.encoding, msg.step = "rgb8", 3 * image.shape[1]
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg


def compressed_msg(jpeg: bytes, t: float, frame_id: str) -> CompressedImage:
    msg = CompressedImage()
    msg.header.stamp, msg.header.frame_id = stamp(t), frame_id
    msg.format = "jpeg"
    msg.data = jpeg
    return msg


def camera_info(width: int, height: int, t: float, frame_id: str, horizontal_fov_deg: float) -> CameraInfo:
    """CameraInfo for a pinhole camera of this size and horizontal field of view, no distortion;
    a field of view of 0 leaves K, P and R zero: "uncalibrated", as sensor_msgs/CameraInfo defines."""
    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp(t), frame_id
    msg.width, msg.height = width, height
    if horizontal_fov_deg > 0:
        f = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        msg.distortion_model, msg.d = "plumb_bob", [0.0] * 5
        msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
