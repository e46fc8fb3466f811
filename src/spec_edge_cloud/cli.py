"""`spec-edge-cloud` command line: one sub-command per module, heavy imports deferred to run time.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`; this file only lists them,
so `spec-edge-cloud --help` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "smoke": ("spec_edge_cloud.ros.smoke", "check that rclpy and DDS work in this environment"),
    "decode": ("spec_edge_cloud.commands.decode", "one response from a draft/target pair in any mode"),
    "exits": ("spec_edge_cloud.commands.exits", "train exit heads by self-distillation, or report agreement"),
    "verifier": ("spec_edge_cloud.commands.verifier", "serve a target model to robots over ZeroMQ (the cloud side)"),
    "keys": ("spec_edge_cloud.commands.keys", "generate CurveZMQ key pairs for the verifier and robots"),
    "link": ("spec_edge_cloud.commands.link", "emulate a network link (delay, jitter, bandwidth, loss) on loopback"),
    "demo": ("spec_edge_cloud.commands.demo", "closed-loop demo: sim + robot nodes + verifier, modes compared, report"),
    "up": ("spec_edge_cloud.commands.up", "start a scenario's nodes, one process each, from a YAML list (no ros2 launch)"),
    "train": ("spec_edge_cloud.commands.train", "train the default VLM pair and the SmolLM2 exits/draft, with model cards"),
    "sim": ("spec_edge_cloud.commands.sim", "MuJoCo Go2 sim: `dataset` (expert training data), `run` (one episode)"),
    "record": ("spec_edge_cloud.commands.record", "record /camera/image_raw and /instruction to a rosbag2 MCAP bag"),
    "bench": ("spec_edge_cloud.commands.bench", "latency benchmarks: `replay` (a bag through every mode), `profile` (simulator)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spec-edge-cloud", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
