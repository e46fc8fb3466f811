"""`spec-edge-cloud up CONFIG`: start a scenario's nodes from a pip install, one process per node.

    spec-edge-cloud up config/up_sim.yaml            # or just: up up_sim
    spec-edge-cloud up up_sim --set mode=cloud --print

Ctrl-C stops every process cleanly (exit 0); a process that dies stops the rest (exit 1).
The config format is described in ros/launcher.py and docs/ros.md.
"""
from __future__ import annotations

import argparse
import sys

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="an up config: a path, or a name in ./config (e.g. up_sim)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="change one of the config's vars (the value is read as YAML: 5 is a number)")
    parser.add_argument("--print", action="store_true", help="print the command lines and exit")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds each process gets to stop")


def parse_sets(items: list[str]) -> dict[str, object]:
    sets = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"--set expects VAR=VALUE, got {item!r}")
        try:
            sets[name] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {name}: {value!r} is not a YAML value ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())})") from None
    return sets


def run(args: argparse.Namespace) -> int:
    from spec_edge_cloud.ros.launcher import (LaunchConfigError, ProcessGroup, find_config, load_up_config,
                                              run_group)
    try:
        config = load_up_config(find_config(args.config), parse_sets(args.set))
    except (LaunchConfigError, FileNotFoundError, ValueError) as e:
        print(f"up: {e}", file=sys.stderr)
        return 2
    if args.print:
        for spec in config.processes:
            print(f"{spec.name}: {spec.command_line()}")
        return 0
    print(f"up: {config.path}: {config.description}")
    return run_group(ProcessGroup(config.processes), grace_s=args.grace)
