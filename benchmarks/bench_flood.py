"""A good robot's rounds while 1000 connections each send 10 PREFILLs (loopback only, bounded).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_flood.py [--connections 1000 --prefills 10 --seconds 30]

The verifier is the real `spec-edge-cloud verifier` process serving the shipped target (plaintext on
loopback, so each connection is a peer of its own). The good robot (this process: a real `ZmqLink`
and the decoding client, `spec-ee-pre`, 16 tokens a response, deadline 10 s, on the frames of
data/bags/sim_small) decodes `--responses` responses alone, then goes on for `--seconds` from the
moment an attacker process opens `--connections` DEALER sockets, each saying HELLO and sending `--prefills` PREFILLs
of a camera frame and prompt (what costs the cloud most), as fast as it can. Printed: the good
robot's median and 90th-percentile round (DRAFT to FINAL) alone and under the flood, responses not
verified (a missed deadline), and how the server answered the attacker. Native timings on this
2-core CPU (server, robot and attacker share it).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def attack(endpoint: str, connections: int, prefills: int, seconds: float) -> None:
    """The attacker process: HELLO + PREFILLs on every connection, then drain replies for `seconds`."""
    import zmq

    from spec_edge_cloud.bench.bags import read_frames
    from spec_edge_cloud.decoding.messages import Error, Start
    from spec_edge_cloud.modeling import jpeg
    from spec_edge_cloud.modeling.bundle import load_bundle
    from spec_edge_cloud.transport import protocol
    draft = load_bundle(ROOT / "models" / "draft")
    frame = read_frames(ROOT / "data" / "bags" / "sim_small")[0]
    pixels, data = jpeg.roundtrip(frame.image)
    ids = draft.encode(frame.instruction, pixels).input_ids
    ctx = zmq.Context()
    socks, replies = [], collections.Counter()
    print("flooding", flush=True)
    t0 = time.monotonic()
    for c in range(connections):
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.sndhwm = 100
        s.connect(endpoint)
        sender = os.urandom(protocol.SENDER_BYTES)
        s.send(protocol.pack(protocol.Hello(draft.tokenizer_fingerprint()), 0, sender), zmq.NOBLOCK)
        for i in range(prefills):
            s.send(protocol.pack(Start(f"a{i}", ids, data), i + 1, sender), zmq.NOBLOCK)
        socks.append(s)
    sent_s = time.monotonic() - t0
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s, _ in poller.poll(100):
            while s.poll(0):
                msg = protocol.unpack(s.recv()).msg
                replies[msg.code if isinstance(msg, Error) else type(msg).__name__] += 1
    print(f"attacker: {connections} connections x {prefills} PREFILLs sent in {sent_s:.1f} s; "
          f"answers: {dict(replies)}", flush=True)
    for s in socks:
        s.close(0)
    ctx.term()


def robot(responses: int, draft, frames, client, until: float = 0.0, refused: list | None = None):
    """`responses` responses (and more until `until`, monotonic): round times, not verified, responses;
    refusals appended to `refused`."""
    refused = [] if refused is None else refused
    from spec_edge_cloud.decoding.client import CloudError
    from spec_edge_cloud.modeling import jpeg
    before = len(client.link.stats.rounds)
    missed = i = 0
    while i < responses or time.monotonic() < until:
        frame = frames[i % len(frames)]
        try:
            resp = client.generate(draft.encode(frame.instruction, *jpeg.roundtrip(frame.image)))
            missed += not resp.verified
        except CloudError as exc:  # refused (`busy`): the decoding client raises on an ERROR
            refused.append(str(exc))
        i += 1
    rounds = [t.final - t.sent for t in list(client.link.stats.rounds)[before:] if t.round > 0]
    return rounds, missed, i


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--prefills", type=int, default=10)
    ap.add_argument("--responses", type=int, default=20)
    ap.add_argument("--attacker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the good robot decodes under the flood")
    ap.add_argument("--attack-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.attacker:
        attack(args.attacker, args.connections, args.prefills, args.attack_seconds)
        return 0
    import torch

    from spec_edge_cloud.bench.bags import read_frames
    from spec_edge_cloud.decoding.client import SpecClient
    from spec_edge_cloud.decoding.modes import DecodeConfig
    from spec_edge_cloud.modeling.bundle import load_bundle
    from spec_edge_cloud.transport.client import LinkOptions, connect
    torch.set_num_threads(1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    log = open("/tmp/bench_flood_verifier.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.cli", "verifier", "--target",
                               str(ROOT / "models" / "target"), "--bind", "tcp://127.0.0.1:0", "--quiet-rounds"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        endpoint = ""
        for _ in range(600):
            if m := re.search(r"ready on (tcp://\S+)", Path(log.name).read_text()):
                endpoint = m.group(1)
                break
            time.sleep(0.1)
        draft = load_bundle(ROOT / "models" / "draft")
        frames = read_frames(ROOT / "data" / "bags" / "sim_small")
        link = connect(endpoint, draft.tokenizer_fingerprint(), LinkOptions(handshake_timeout_s=30))
        client = SpecClient(draft, link, DecodeConfig(mode="spec-ee-pre", max_new_tokens=16, deadline_s=10.0))
        robot(3, draft, frames, client)  # warm-up
        alone, missed_alone, _ = robot(args.responses, draft, frames, client)
        attacker = subprocess.Popen([sys.executable, __file__, "--attacker", endpoint, "--connections",
                                     str(args.connections), "--prefills", str(args.prefills), "--attack-seconds",
                                     str(args.seconds)], env=env, stdout=subprocess.PIPE, text=True)
        assert attacker.stdout.readline().strip() == "flooding"
        t0 = time.monotonic()
        refused: list[str] = []
        flooded, missed_flood, n = robot(args.responses, draft, frames, client, t0 + args.seconds, refused)
        flood_s = time.monotonic() - t0
        print(attacker.stdout.read().strip())
        attacker.wait(120)
        link.close()
    finally:
        server.terminate()
        server.wait(10)
    med_a, med_f = statistics.median(alone), statistics.median(flooded)
    p90 = lambda xs: sorted(xs)[int(0.9 * (len(xs) - 1))]  # noqa: E731
    print(f"flood: {args.connections} connections x {args.prefills} PREFILLs (plaintext, loopback), "
          f"good robot {args.responses} responses of 16 tokens, spec-ee-pre, shipped pair")
    print(f"good robot alone: median round {med_a * 1000:.1f} ms, p90 {p90(alone) * 1000:.1f} ms, "
          f"{missed_alone} not verified")
    print(f"good robot under the flood ({n} responses in {flood_s:.1f} s from its start): median round {med_f * 1000:.1f} ms "
          f"({med_f / med_a:.2f}x), p90 {p90(flooded) * 1000:.1f} ms, {missed_flood} not verified (missed deadline), "
          f"{len(refused)} refused{': ' + refused[0] if refused else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
