"""Tokens/s and time per round of every mode over the in-process link, with a configurable delay.

    .venv/bin/python benchmarks/bench_decoding.py [--rtt-ms 120] [--draft models/draft --target models/target]
        [--target-profile go2-orin-a100 --draft-profile go2-orin-a100] [--responses 3]

Without model directories it builds a tiny Llama pair (target 8 layers, draft = noisy copy) so the
figures are about the protocol, not the models. With profiles, timings are emulated (it says so).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from text_table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spec_edge_cloud.decoding.adaptive import AdaptiveController  # noqa: E402
from spec_edge_cloud.decoding.client import SpecClient  # noqa: E402
from spec_edge_cloud.decoding.link import InProcessLink  # noqa: E402
from spec_edge_cloud.decoding.modes import MODES, DecodeConfig  # noqa: E402
from spec_edge_cloud.decoding.target import TargetEngine  # noqa: E402
from spec_edge_cloud.transport.assembly import pacer  # noqa: E402
from spec_edge_cloud.decoding.verifier import VerifierService  # noqa: E402
from spec_edge_cloud.modeling.exit_heads import ExitHeads  # noqa: E402
from spec_edge_cloud.modeling.bundle import load_bundle  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt-ms", type=float, default=120.0)
    ap.add_argument("--draft"), ap.add_argument("--target")
    ap.add_argument("--target-profile"), ap.add_argument("--draft-profile")
    ap.add_argument("--responses", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()

    if args.target:
        target_bundle, draft = load_bundle(args.target), load_bundle(args.draft)
        engine_heads = None
    else:
        from decoding_fixtures import pair
        target_bundle, draft = pair("llama", 7, noise=0.1, layers=8)
        engine_heads = ExitHeads([8], target_bundle.hidden_size, 8)  # an exit that always agrees
    tp, dp = pacer(args.target_profile), pacer(args.draft_profile)
    if args.target:
        engine = TargetEngine.from_dir(args.target, pacer=tp)
    else:
        engine = TargetEngine(target_bundle, engine_heads, tp)
    prompts = [draft.encode(f"w{i} w{i + 4} w{i + 9}") if not args.target else draft.encode("go to the red ball")
               for i in range(1, args.responses + 1)]

    emulated = bool(tp or dp)
    table = Table(title=f"in-process link, RTT {args.rtt_ms:.0f} ms, timings "
                        f"{'EMULATED (' + (args.target_profile or '') + ')' if emulated else 'native CPU'}")
    for col in ("mode", "tokens/s", "ms/token", "TTC ms", "rounds", "ms/round", "accept", "tok/round", "hit rate"):
        table.add_column(col, justify="right")
    adaptive = AdaptiveController(gamma=args.gamma)
    for mode in args.modes.split(","):
        ttc, tokens, rounds, acc, hits = [], 0, 0, [], []
        for prompt in prompts:
            link = InProcessLink(VerifierService(engine), rtt_s=args.rtt_ms / 1000)
            try:
                cfg = DecodeConfig(mode=mode, gamma=args.gamma, max_new_tokens=args.max_new_tokens, exit_threshold=0.0)
                r = SpecClient(draft, link if mode != "edge" else None, cfg, adaptive=adaptive, pacer=dp).generate(prompt)
            finally:
                link.close()
            m = r.metrics
            ttc.append(m.ttc_s)
            tokens += m.tokens
            rounds += m.rounds
            acc.append(m.acceptance)
            hits.append(m.hit_rate)
        total = sum(ttc)
        table.add_row(mode, f"{tokens / total:.1f}", f"{1000 * total / tokens:.1f}",
                      f"{1000 * statistics.median(ttc):.0f}", str(rounds),
                      f"{1000 * total / rounds:.0f}" if rounds else "-", f"{statistics.mean(acc):.2f}",
                      f"{tokens / rounds:.2f}" if rounds else "-", f"{statistics.mean(hits):.2f}")
    print(table)


if __name__ == "__main__":
    main()
