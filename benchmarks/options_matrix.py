"""Issue 17's options measured against the paper's method: one `bench replay` per option setting.

For each bag and regime, `spec-ee-pre` and `adaptive` answer every frame with the options off (the
paper's method: one pre-draft branch, its fixed exit threshold, no reuse, no grammar), with each
option alone, and with all of them:

    off      --reuse-answers 0 --predraft-branches 1 --draft-grammar off
    reuse    --reuse-answers 2                                          (recent answers extend drafts)
    fanout   --predraft-branches 3                                      (fan-out pre-drafting)
    grammar  --draft-grammar on                                         (forced tokens need no draft step)
    all      --reuse-answers 2 --predraft-branches 3 --draft-grammar on

`adaptive` always calibrates its exit thresholds online (decoding/calibration.py); `spec-ee-pre`
keeps its fixed one. A setting's options apply to both modes of its run, so the baseline is
`spec-ee-pre` of the `off` run, which also runs `cloud` (the target alone). Each run's JSON goes to
--out (a run whose JSON is there is not repeated); then the table is printed from the JSONs
(median / mean TTC, tokens per target pass, pre-draft hit rate, cloud compute per token, bytes up
per token, what each option did), the simulator's error on each run (bench profile's calibration),
and whether every run was lossless (every greedy answer of every mode and setting
equal to the target alone's, `cloud` of the `off` run):

    nice -n 15 .venv/bin/python benchmarks/options_matrix.py --out runs/options \\
        --bags data/bags/sim_small,data/bags/sim_episode --regimes go2-orin-a100,nano-a100

Timings are EMULATED (the regime's profile paces the shipped pair on this machine).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from spec_edge_cloud.bench import predict

SETTINGS = {
    "off": ["--reuse-answers", "0", "--predraft-branches", "1", "--draft-grammar", "off"],
    "reuse": ["--reuse-answers", "2", "--predraft-branches", "1", "--draft-grammar", "off"],
    "fanout": ["--reuse-answers", "0", "--predraft-branches", "3", "--draft-grammar", "off"],
    "grammar": ["--reuse-answers", "0", "--predraft-branches", "1", "--draft-grammar", "on"],
    "all": ["--reuse-answers", "2", "--predraft-branches", "3", "--draft-grammar", "on"],
}
MODES = ("spec-ee-pre", "adaptive")


def run_path(out: Path, bag: str, regime: str, setting: str) -> Path:
    return out / f"{Path(bag).name}.{regime}.{setting}.json"


def replay(out: Path, bag: str, regime: str, setting: str) -> Path:
    path = run_path(out, bag, regime, setting)
    if not path.exists():
        modes = ("cloud",) + MODES if setting == "off" else MODES
        cmd = [sys.executable, "-m", "spec_edge_cloud.cli", "bench", "replay", bag, "--regime", regime,
               "--modes", ",".join(modes), "--quiet", "--json", str(path), *SETTINGS[setting]]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def activity(s: dict) -> str:
    """What each option did in a mode's responses: reused rounds, further branches, forced tokens."""
    out = []
    if s["reused_rounds"]:
        out.append(f"reuse: {s['reused_rounds']:.0%} of rounds, {_f(s['reused_acceptance'], '{:.0%}')} of "
                   "their tokens accepted")
    further = {rank: n for rank, n in s["branches_sent"].items() if rank != "0"}
    if further:
        out.append("branches: " + ", ".join(f"rank {rank} {n} sent, {s['branch_hit_rate'][rank]:.0%} verified"
                                             for rank, n in further.items()))
    if s["grammar_forced"]:
        out.append(f"forced: {s['grammar_forced']:.0%} of drafted")
    if s["early_trusted"]:
        out.append(f"EARLYs acted on: {s['early_trusted']}, missed {_f(s['early_miss_rate'], '{:.0%}')}")
    if s.get("predrafts_unshown"):   # runs before unshown pre-drafts have no count
        out.append(f"pre-drafts: {s['predrafts']}, {s['predrafts_unshown']} of them unshown")
    return "; ".join(out) or "-"


def table(out: Path, bag: str, regime: str, settings: list[str]) -> list[str]:
    """Markdown rows for one bag and regime, and the lossless check across its settings."""
    rows = ["| setting, mode | TTC median / mean (ms) | vs paper's mean | tokens per target pass | pre-draft hit "
            "rate | cloud ms per token | vs paper's | bytes up per token | acceptance | what the options did |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    results = {s: json.loads(run_path(out, bag, regime, s).read_text()) for s in settings
               if run_path(out, bag, regime, s).exists()}
    if "off" not in results:
        return [f"(no `off` run of {bag} in {regime})"]
    paper = results["off"]["summary"]["spec-ee-pre"]
    target = {(r["frame"], r["repeat"]): r["token_ids"] for r in results["off"]["records"] if r["mode"] == "cloud"}
    same = bool(target)
    for setting, result in results.items():
        for mode in MODES:
            s = result["summary"][mode]
            rows.append(f"| {setting}, {mode} | {_ms(s['ttc_s']['median'])} / {_ms(s['ttc_s']['mean'])} | "
                        f"{s['ttc_s']['mean'] / paper['ttc_s']['mean'] - 1:+.0%} | {_f(s['tokens_per_round'])} | "
                        f"{_f(s['hit_rate'])} | {_ms(s['cloud_s_per_token'])} | "
                        f"{s['cloud_s_per_token'] / paper['cloud_s_per_token'] - 1:+.0%} | "
                        f"{_f(s['bytes_up_per_token'], '{:.0f}')} | {_f(s['acceptance'])} | {activity(s)} |")
            same &= target == {(r["frame"], r["repeat"]): r["token_ids"] for r in result["records"]
                               if r["mode"] == mode}
    rows.append("")
    errors = [(abs(r["error"]), r["error"], r["mode"], setting) for setting, result in results.items()
              for r in predict.calibrate(result)["rows"]]
    worst = max(errors)
    rows.append(f"Simulator (`bench profile --calibrate RUN.json`) on these runs: worst error {worst[1]:+.1%} "
                f"({worst[2]}, {worst[3]}); mean |error| {sum(e[0] for e in errors) / len(errors):.1%}")
    rows.append("")
    rows.append(f"Lossless: every answer of both modes in every setting equal to the target alone's (`cloud`, "
                f"{len(target)} frames): {'yes' if same else 'NO'}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/options"))
    parser.add_argument("--bags", default="data/bags/sim_small,data/bags/sim_episode")
    parser.add_argument("--regimes", default="go2-orin-a100,nano-a100")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--table-only", action="store_true", help="print the table from the JSONs there")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = args.settings.split(",")
    pairs = [(bag, regime) for regime in args.regimes.split(",") for bag in args.bags.split(",")]
    if not args.table_only:
        for bag, regime in pairs:
            for setting in settings:
                replay(args.out, bag, regime, setting)
    for bag, regime in pairs:
        print(f"\n{bag}, {regime} (EMULATED), shipped pair (models/draft, models/target)\n")
        print("\n".join(table(args.out, bag, regime, settings)))


if __name__ == "__main__":
    main()
