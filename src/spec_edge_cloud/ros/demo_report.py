"""The demo's report: per-episode table, per-mode summary, plots, raw results (plain Python + matplotlib).

Written under runs/demo-<time>/: report.md, latency.png, trajectories.png, results.json.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from .demo_observer import ModeRun


@dataclass(frozen=True)
class EpisodeSetup:
    seed: int
    instruction: str
    start: tuple[float, float, float]            # x, y, yaw
    goal: tuple[float, float]
    objects: tuple[tuple[str, float, float], ...]  # (name, x, y), the goal included


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def mode_summary(runs: list[ModeRun], modes: list[str]) -> list[dict]:
    """Per mode: successes, mean TTFA, mean first-answer TTC, mean task time, and the TTC speedup
    over cloud decoding (cloud's mean TTC / this mode's, same episodes)."""
    rows = []
    cloud_ttc = _mean([r.first_ttc_s for r in runs if r.mode == "cloud"])
    for mode in modes:
        mine = [r for r in runs if r.mode == mode]
        ttc = _mean([r.first_ttc_s for r in mine])
        rows.append({"mode": mode, "episodes": len(mine), "successes": sum(r.success for r in mine),
                     "ttfa_s": _mean([r.ttfa_s for r in mine]), "ttc_s": ttc,
                     "task_s": _mean([r.task_s for r in mine if r.success]),
                     "acceptance": _mean([r.mean("acceptance") for r in mine if r.mean("drafted")]),
                     "hit_rate": _mean([r.mean("hit_rate") for r in mine if r.mean("predrafts")]),
                     "speedup": cloud_ttc / ttc if cloud_ttc and ttc else None})
    return rows


def _plot_latency(runs: list[ModeRun], modes: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, title) in zip(axes, (("ttfa_s", "time to first action (s)"),
                                       ("first_ttc_s", "time to complete the first answer (s)"))):
        for i, mode in enumerate(modes):
            values = [getattr(r, key) for r in runs if r.mode == mode and getattr(r, key) is not None]
            if values:
                ax.bar(i, statistics.fmean(values), color=f"C{i}", alpha=0.6)
                ax.scatter([i] * len(values), values, color="k", s=12, zorder=3)
        ax.set_xticks(range(len(modes)), modes, rotation=20)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_trajectories(runs: list[ModeRun], setups: list[EpisodeSetup], modes: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(setups), figsize=(4 * len(setups), 4), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        for name, x, y in setup.objects:
            colour = name.split("_")[0]
            ax.scatter([x], [y], s=160 if (x, y) == setup.goal else 60, color=colour, edgecolor="k", zorder=2)
        ax.scatter([setup.start[0]], [setup.start[1]], marker="^", color="k", s=60, zorder=3)
        for i, mode in enumerate(modes):
            for r in runs:
                if r.seed == setup.seed and r.mode == mode and r.trajectory:
                    xs, ys = zip(*r.trajectory)
                    ax.plot(xs, ys, color=f"C{i}", label=f"{mode}: {r.result}")
                    ax.scatter([xs[-1]], [ys[-1]], color=f"C{i}", marker="x", s=40, zorder=4)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        ax.set_title(f"seed {setup.seed}: {setup.instruction}", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, header: list[str], runs: list[ModeRun], setups: list[EpisodeSetup],
                 modes: list[str]) -> Path:
    """Write report.md, the plots and results.json under `out`; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    _plot_latency(runs, modes, out / "latency.png")
    _plot_trajectories(runs, setups, modes, out / "trajectories.png")
    lines = ["# spec_edge_cloud closed-loop demo", "", *header, "",
             "## Per episode", "",
             "TTFA: frame capture -> first motion command. TTC: frame capture -> last token of the first "
             "answer final. Task time: sim time from the episode's start to its end.", "",
             "| seed | instruction | mode | result | task time (s) | TTFA (s) | TTC (s) | answers (decoded as) | "
             "acceptance | pre-draft hits | first answer |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        first = r.completed[0].text if r.completed else ""
        acceptance = r.mean("acceptance") if r.mean("drafted") else None
        hits = r.mean("hit_rate") if r.mean("predrafts") else None
        lines.append(f"| {r.seed} | {r.instruction} | {r.mode} | {r.result} | {fmt(r.task_s, 1)} | {fmt(r.ttfa_s)} | "
                     f"{fmt(r.first_ttc_s)} | {len(r.completed)} ({r.decoded_as()}) | {fmt(acceptance)} | {fmt(hits)} "
                     f"| `{first}` |")
    lines += ["", "## Per mode", "",
              "| mode | successes | mean TTFA (s) | mean TTC (s) | TTC speedup vs cloud | mean task time, "
              "successes (s) | acceptance | pre-draft hit rate |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in mode_summary(runs, modes):
        lines.append(f"| {row['mode']} | {row['successes']}/{row['episodes']} | {fmt(row['ttfa_s'])} | "
                     f"{fmt(row['ttc_s'])} | {fmt(row['speedup'])} | {fmt(row['task_s'], 1)} | "
                     f"{fmt(row['acceptance'])} | {fmt(row['hit_rate'])} |")
    lines += ["", "![latency](latency.png)", "", "![trajectories](trajectories.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"header": header, "modes": modes,
                                                  "episodes": [s.__dict__ for s in setups],
                                                  "runs": [r.to_dict() for r in runs]}, indent=1))
    return out / "report.md"
