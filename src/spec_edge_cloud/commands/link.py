"""`spec-edge-cloud link`: a user-space network emulator between robot and verifier, on loopback.

Example: `spec-edge-cloud link --listen tcp://127.0.0.1:6000 --forward tcp://127.0.0.1:5555 --rtt 120ms
--jitter 10ms --bandwidth 20mbit --loss 0.01`, then point the robot at tcp://127.0.0.1:6000.
Semantics (delay, FIFO, shared bandwidth, whole-message loss): transport/emulator.py.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", required=True, help="loopback endpoint the robot connects to, tcp://127.0.0.1:P1")
    p.add_argument("--forward", required=True, help="the verifier's endpoint, tcp://127.0.0.1:P2")
    p.add_argument("--rtt", default="0ms", help="round-trip delay, e.g. 120ms")
    p.add_argument("--jitter", default="0ms", help="spread of the round trip (+- half each way), e.g. 10ms")
    p.add_argument("--bandwidth", default=None, help="bit rate per direction, e.g. 20mbit (default: unlimited)")
    p.add_argument("--loss", default="0", help="probability of losing a whole message, e.g. 0.01 or 1%%")
    p.add_argument("--profile", default=None, help="take rtt and jitter from a timing profile's link section")
    p.add_argument("--seed", type=int, default=None, help="seed of the jitter and loss draws")


def run(args: argparse.Namespace) -> int:
    from ..transport.emulator import LinkEmulator, LinkSpec, parse_duration, parse_loss, parse_rate
    try:
        rtt, jitter = parse_duration(args.rtt), parse_duration(args.jitter)
        if args.profile:
            from ..decoding.timing import TimingProfile
            profile = TimingProfile.load(args.profile)
            if profile.rtt_ms is None:
                raise ValueError(f"profile {profile.name} has no link section")
            rtt, jitter = profile.rtt_ms / 1000, profile.jitter_ms / 1000
        spec = LinkSpec(rtt, jitter, parse_rate(args.bandwidth), parse_loss(args.loss))
        emulator = LinkEmulator(args.listen, args.forward, spec, args.seed).start()
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"spec-edge-cloud link: error: {exc}", file=sys.stderr)
        return 2
    print(f"link emulator ready on {emulator.endpoint} -> {args.forward}: {spec.describe()}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emulator.stop()
    s = emulator.stats
    print(f"link emulator: {s.connections} connections; messages up {s.messages['up']} (dropped "
          f"{s.dropped['up']}), down {s.messages['down']} (dropped {s.dropped['down']})", flush=True)
    return 0
