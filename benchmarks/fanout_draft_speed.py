"""Where fan-out pre-drafting would pay: the shipped pair's recorded rounds, a faster robot draft.

In the Go2 regime a γ = 4 branch takes 4 x 72 ms = 288 ms on the Orin, while a FINAL comes about
465 ms after the layer-2 EARLY and a DRAFT needs a 120 ms round trip: 345 ms, room for one branch
only, so fan-out sends nearly none (docs/benchmarks.md). This script replays the rounds a
`bench replay --predraft-branches 3` run recorded (which of each EARLY's alternatives the FINAL
was) through the profile simulator (bench/profile_sim.py: the client's own core) in the
go2-orin-a100 profile with the draft's time per token scaled, 1, 2 and 3 branches, five seeds each:

    spec-edge-cloud bench replay data/bags/sim_small --regime go2-orin-a100 --modes spec-ee-pre \\
        --predraft-branches 3 --json /tmp/fanout/b3.json
    .venv/bin/python benchmarks/fanout_draft_speed.py /tmp/fanout/b3.json

Predictions, EMULATED timings: only the draft's speed differs from the Go2 profile.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from spec_edge_cloud.bench import predict
from spec_edge_cloud.bench.profile_sim import simulate
from spec_edge_cloud.bench.regimes import load_regime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replay", type=Path, help="result JSON of a bench replay run with --predraft-branches 3")
    parser.add_argument("--draft-ms", default="72,36,24,12", help="draft times per token to try (ms)")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    result = json.loads(args.replay.read_text())
    base = load_regime("go2-orin-a100")
    print(f"rounds of {args.replay} (spec-ee-pre), go2-orin-a100 with the draft's time per token as given")
    for per_token in (float(x) for x in args.draft_ms.split(",")):
        regime = predict.sim_regime("go2-draft", dataclasses.replace(base, draft_per_token_ms=per_token))
        cells = []
        for branches in (1, 2, 3):
            recs = [r for seed in range(args.seeds)
                    for r in simulate(regime, "spec-ee-pre", predict.jobs_from_replay(result, "spec-ee-pre", seed),
                                      result["config"]["gamma"], result["config"]["max_new_tokens"], seed,
                                      branches=branches)]
            further = sum(n for r in recs for rank, n in r.branches_sent.items() if rank != "0")
            verified = sum(n for r in recs for rank, n in r.branch_hits.items() if rank != "0")
            hit_rate = sum(r.hits for r in recs) / max(1, sum(r.predrafts for r in recs))
            cells.append(f"B={branches}: TTC mean {statistics.mean(r.ttc_s for r in recs) * 1000:.0f} ms, "
                         f"hit rate {hit_rate:.2f}, further branches {further} sent / {verified} verified")
        print(f"draft {per_token:g} ms/token | " + " | ".join(cells))


if __name__ == "__main__":
    main()
