"""Head-camera frames to a video file with OpenCV (opencv-python-headless): mp4v in .mp4, MJPG in .avi."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


class VideoWriter:
    """Writes RGB frames of one size; the codec follows the file's suffix."""

    def __init__(self, path: Path, fps: float, size: int) -> None:
        import cv2

        path = Path(path)
        codec = CODECS.get(path.suffix.lower())
        if codec is None:
            raise ValueError(f"video file must end in {' or '.join(CODECS)}, got {path.name!r}")
        if not fps > 0:
            raise ValueError(f"video fps must be positive, got {fps}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._cv2 = cv2
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (size, size))
        if not self._writer.isOpened():
            raise RuntimeError(f"OpenCV could not open {path} for writing with codec {codec}")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
