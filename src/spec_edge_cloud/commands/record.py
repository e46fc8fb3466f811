"""`spec-edge-cloud record --out BAG`: record /camera/image_raw and /instruction to a rosbag2 MCAP bag.

Needs rclpy (a live ROS graph); for simulator episodes without ROS use `spec-edge-cloud sim record`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="new bag directory")
    p.add_argument("--duration", type=float, default=None, help="seconds to record (default: until Ctrl-C)")
    p.add_argument("--frames", type=int, default=None, help="stop after this many images")


def run(args: argparse.Namespace) -> int:
    from ..bench.bags import BagError
    try:
        from ..ros.record import record
        bag = record(args.out, args.duration, args.frames)
    except (BagError, ImportError) as exc:
        print(f"spec-edge-cloud record: error: {exc}", file=sys.stderr)
        return 2
    print(f"{bag.images} images and {bag.instructions} instructions in {args.out}")
    return 0
