"""The shipped pair replayed in every regime: the README's figures table, from one command.

One `bench replay` of the shipped bag per regime, every mode over the ZeroMQ bridge (verifier and
link-emulator processes), each run's JSON kept in --out (a run whose JSON is there is not repeated),
then the tables printed from the JSONs:

    nice -n 15 .venv/bin/python benchmarks/regimes.py --out runs/regimes

Regimes: `go2-orin-a100`, `nano-a100` and `h100` are EMULATED (the regime's profile paces the real
models: draft on the robot, target in the verifier); `native` runs both at this CPU's own speed
behind an emulated 120 ms link. An emulated run is only as fast as the profile if this machine keeps
up with it: the tables say how far drafting ran over the profile, and the simulator's error on the
run (`bench profile --calibrate`), which grows when the machine fell behind.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from spec_edge_cloud.bench import predict

REGIMES = {
    "go2-orin-a100": ["--regime", "go2-orin-a100"],
    "nano-a100": ["--regime", "nano-a100"],
    "h100": ["--regime", "h100"],
    "native": ["--regime", "native", "--link", "rtt=120ms,jitter=10ms,bandwidth=20mbit"],
}
MODES = ("edge", "cloud", "spec", "spec-ee", "spec-ee-pre", "adaptive")


def replay(out: Path, bag: str, regime: str, extra: list[str]) -> dict:
    path = out / f"{Path(bag).name}.{regime}.json"
    if not path.exists():
        cmd = [sys.executable, "-m", "spec_edge_cloud.cli", "bench", "replay", bag, *REGIMES[regime], *extra,
               "--quiet", "--json", str(path), "--out", str(out / regime)]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(path.read_text())


def fmt(x: float | None, spec: str = ".2f", scale: float = 1.0) -> str:
    return "-" if x is None else format(scale * x, spec)


def tables(runs: dict[str, dict]) -> str:
    names = list(runs)
    lines = ["TTFA median (ms) / TTC mean (ms) / speedup over cloud (TTC(cloud) / TTC(mode), same frames):", "",
             "| mode | " + " | ".join(f"`{r}` {'EMULATED' if runs[r]['emulated'] else 'native'}" for r in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for mode in MODES:
        cells = []
        for r in names:
            s = runs[r]["summary"].get(mode)
            cells.append("-" if s is None else f"{fmt(s['ttfa_s']['median'], '.0f', 1000)} / "
                         f"{fmt(s['ttc_s']['mean'], '.0f', 1000)} / {fmt(s['speedup'])}")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    pre = {r: runs[r]["summary"]["spec-ee-pre"] for r in names}
    cloud = {r: runs[r]["summary"]["cloud"] for r in names}
    ada = {r: runs[r]["summary"]["adaptive"] for r in names}
    late = {r: sum(runs[r]["draft_late_s"].values()) if runs[r]["draft_late_s"] else 0.0 for r in names}
    worst = {r: f"{max((row['error'] for row in predict.calibrate(runs[r])['rows']), key=abs):+.0%}"
             if runs[r]["emulated"] else "-" for r in names}
    rows = [
        ("latency reduction vs cloud, 1 - TTC(spec-ee-pre) / TTC(cloud)",
         {r: f"{1 - pre[r]['ttc_s']['mean'] / cloud[r]['ttc_s']['mean']:.0%}" for r in names}),
        ("adaptive: latency reduction vs cloud",
         {r: f"{1 - ada[r]['ttc_s']['mean'] / cloud[r]['ttc_s']['mean']:.0%}" for r in names}),
        ("acceptance (share of drafted tokens accepted)", {r: fmt(pre[r]["acceptance"]) for r in names}),
        ("tokens per round", {r: fmt(pre[r]["tokens_per_round"]) for r in names}),
        ("exit agreement, per exit layer", {r: " / ".join(f"L{k} {v:.2f}" for k, v in pre[r]["exit_agreement"].items())
                                            for r in names}),
        ("pre-draft hit rate", {r: fmt(pre[r]["hit_rate"]) for r in names}),
        ("cloud GPU (or CPU) ms per token: cloud / spec-ee-pre / adaptive",
         {r: f"{fmt(cloud[r]['cloud_s_per_token'], '.0f', 1000)} / {fmt(pre[r]['cloud_s_per_token'], '.0f', 1000)}"
             f" / {fmt(ada[r]['cloud_s_per_token'], '.0f', 1000)}" for r in names}),
        ("adaptive: acceptance / tokens per round",
         {r: f"{fmt(ada[r]['acceptance'])} / {fmt(ada[r]['tokens_per_round'])}" for r in names}),
        ("drafting over the profile, all modes (s)", {r: f"{late[r]:.1f}" if runs[r]["emulated"] else "-"
                                                      for r in names}),
        ("simulator's worst error on the run", worst),
        ("lossless (every greedy mode == cloud, responses)",
         {r: f"{'yes' if runs[r]['lossless']['ok'] else 'NO'} ({runs[r]['lossless']['responses']})" for r in names}),
    ]
    lines += ["", "| figure (spec-ee-pre unless named) | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells[r] for r in names) + " |" for label, cells in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/regimes"))
    parser.add_argument("--bag", default="data/bags/sim_small")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--frames", type=int, help="only the bag's first N frames (a quick look)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = ["--frames", str(args.frames)] if args.frames else []
    runs = {r: replay(args.out, args.bag, r, extra) for r in args.regimes.split(",")}
    print(f"\n{args.bag}, shipped pair (models/draft, models/target), gamma {runs[next(iter(runs))]['config']['gamma']}\n")
    print(tables(runs))
    if not all(run["lossless"]["ok"] for run in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
