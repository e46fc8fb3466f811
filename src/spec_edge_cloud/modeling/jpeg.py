"""JPEG, the form an image crosses the link in: the robot drafts on the pixels the cloud will decode.

JPEG is lossy, so the robot encodes its camera frame once, decodes it, and builds its prompt from
those pixels with the JPEG bytes beside them (`Prompt.jpeg`); the PREFILL carries exactly those
bytes, and the cloud, decoding them with the same opencv/libjpeg build, sees the very pixels the
draft saw. These helpers trust their input; bytes from the network are checked first
(`transport.protocol.check_jpeg`).
"""
from __future__ import annotations

import numpy as np


def encode(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an HxWx3 uint8 RGB image."""
    import cv2
    from .bundle import check_image
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(check_image(image), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("opencv could not encode the image as JPEG")
    return buf.tobytes()


def decode(data: bytes) -> np.ndarray:
    """RGB pixels of JPEG bytes."""
    import cv2
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("JPEG data could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def roundtrip(image: np.ndarray, quality: int = 90) -> tuple[np.ndarray, bytes]:
    """(pixels the cloud will see, the JPEG bytes that carry them)."""
    data = encode(image, quality)
    return decode(data), data
