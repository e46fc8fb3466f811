"""Responses over a lossy, jittery link: how many come back verified, and are they the target's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_link.py --loss 0.1 --jitter 200ms [--responses 100]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_link.py --loss 0.3 --jitter 500ms

The shipped pair (models/draft on the robot, models/target with its exit heads in the cloud): a real
`VerifierServer` on loopback, the user-space link emulator (`transport.emulator`: whole ZeroMQ
messages dropped at random, each direction delayed by rtt/2 +- jitter/2) between it and a real
`ZmqLink`, and the real decoding client in `spec-ee-pre` mode. Prompts are the frames and
instructions of the bag data/bags/sim_small (each image JPEG round-tripped, as a robot sends it).
For each response: verified (every token verified by the cloud) or not (the client finished on the
robot, and why), and whether a verified answer equals the target's own greedy answer. Native timings
on this machine (no pacing); the link is emulated.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from spec_edge_cloud.bench.bags import read_frames  # noqa: E402
from spec_edge_cloud.decoding.client import SpecClient  # noqa: E402
from spec_edge_cloud.decoding.modes import DecodeConfig  # noqa: E402
from spec_edge_cloud.decoding.target import TargetEngine  # noqa: E402
from spec_edge_cloud.modeling.bundle import load_bundle  # noqa: E402
from spec_edge_cloud.modeling import jpeg  # noqa: E402
from spec_edge_cloud.transport.client import LinkOptions, connect  # noqa: E402
from spec_edge_cloud.transport.emulator import LinkEmulator, LinkSpec, parse_duration  # noqa: E402
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer  # noqa: E402


def reference(target, prompt, max_new: int) -> list[int]:
    """The target alone: Hugging Face's greedy generate()."""
    ids = torch.tensor([prompt.input_ids])
    kw = dict(prompt.vision, mm_token_type_ids=(ids == target.image_token_id).int()) if prompt.vision else {}
    with torch.no_grad():
        out = target.model.generate(ids, max_new_tokens=max_new, do_sample=False,
                                    eos_token_id=sorted(target.eos_ids), pad_token_id=0, **kw)
    return out[0, ids.shape[1]:].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", type=int, default=100)
    ap.add_argument("--loss", type=float, default=0.1)
    ap.add_argument("--jitter", default="200ms")
    ap.add_argument("--rtt", default="120ms")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--deadline", type=float, default=10.0, help="the client's deadline_s")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    draft, target = load_bundle(ROOT / "models" / "draft"), load_bundle(ROOT / "models" / "target")
    server = VerifierServer(TargetEngine.from_dir(ROOT / "models" / "target"),
                            ServerConfig(bind="tcp://127.0.0.1:0", log_rounds=False))
    endpoint = server.start()
    spec = LinkSpec(parse_duration(args.rtt), parse_duration(args.jitter), None, args.loss)
    emu = LinkEmulator("tcp://127.0.0.1:0", endpoint, spec, seed=args.seed).start()
    link = connect(emu.endpoint, draft.tokenizer_fingerprint(), LinkOptions(handshake_timeout_s=30))
    frames = read_frames(ROOT / "data" / "bags" / "sim_small")
    config = DecodeConfig(mode="spec-ee-pre", max_new_tokens=args.max_new_tokens, deadline_s=args.deadline)
    client = SpecClient(draft, link, config)
    verified = equal = differ = 0
    why: collections.Counter = collections.Counter()
    seconds = []
    try:
        for i in range(args.responses):
            frame = frames[i % len(frames)]
            pixels, data = jpeg.roundtrip(frame.image)
            t0 = time.monotonic()
            resp = client.generate(draft.encode(frame.instruction, pixels, data))
            seconds.append(time.monotonic() - t0)
            if resp.verified:
                verified += 1
                same = resp.tokens == reference(target, target.encode(frame.instruction, pixels), args.max_new_tokens)
                equal += same
                differ += not same
            else:
                why[resp.metrics.fallback_reason] += 1
    finally:
        stats = link.stats
        link.close()
        emu.stop()
        server.stop()
    print(f"link: rtt {args.rtt} jitter {args.jitter} loss {args.loss:g} (EMULATED, user-space), "
          f"{args.responses} responses of {args.max_new_tokens} tokens, spec-ee-pre, shipped pair, deadline {args.deadline:g} s")
    print(f"verified {verified}/{args.responses} ({100 * verified / args.responses:.0f}%), verified and equal to the "
          f"target {equal}, verified and different {differ}")
    print(f"not verified, by reason: {dict(why) or '-'}")
    print(f"response time: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s; link: retries "
          f"{stats.retries}, PREFILLs re-sent {stats.restarts}, reconnects {stats.reconnects}")
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
