"""The demo's report: per-episode table, per-mode summary, plots, raw results (plain Python + matplotlib).

Per mode, what the method buys a robot: task success with its 95% interval (Wilson: a handful of
episodes per mode leaves it wide, and the report says how wide), decisions per minute (answers the
robot completed per minute of the episode) and time to goal, beside the latencies.
Written under runs/demo-<time>/: report.md, latency.png, trajectories.png, results.json.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from spec_edge_cloud.sim.task import REACH_RADIUS, success_interval

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
    """Per mode: successes and their 95% interval, decisions per minute, mean TTFA, mean first-answer
    TTC, mean time to goal (successes), and the TTC speedup over cloud decoding (cloud's mean TTC /
    this mode's, same episodes)."""
    rows = []
    cloud_ttc = _mean([r.first_ttc_s for r in runs if r.mode == "cloud"])
    for mode in modes:
        mine = [r for r in runs if r.mode == mode]
        ttc = _mean([r.first_ttc_s for r in mine])
        successes = sum(r.success for r in mine)
        minutes = sum(r.ended_t - r.started_t for r in mine) / 60
        rows.append({"mode": mode, "episodes": len(mine), "successes": successes,
                     "success_interval": success_interval(successes, len(mine)) if mine else None,
                     "decisions_per_minute": sum(len(r.completed) for r in mine) / minutes if minutes else None,
                     "ttfa_s": _mean([r.ttfa_s for r in mine]), "ttc_s": ttc,
                     "task_s": _mean([r.task_s for r in mine if r.success]),
                     "acceptance": _mean([r.mean("acceptance") for r in mine if r.mean("drafted")]),
                     "tokens_per_round": _mean([r.mean("tokens_per_round") for r in mine if r.mean("drafted")]),
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


def success_text(row: dict) -> str:
    """'7/10 (95% CI 40-89%)'."""
    lo, hi = row["success_interval"] or (0.0, 0.0)
    return f"{row['successes']}/{row['episodes']} (95% CI {lo:.0%}-{hi:.0%})"


def _plot_trajectories(runs: list[ModeRun], setups: list[EpisodeSetup], modes: list[str], path: Path) -> None:
    """One panel per episode: the objects, the goal ringed at the reach radius and labelled, the
    start, and each mode's path with an x where it ended."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = min(len(setups), 5)
    rows = -(-len(setups) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(setups):]:
        ax.axis("off")
    for ax, setup in zip(axes.flat, setups):
        for name, x, y in setup.objects:
            colour = name.split("_")[0]
            ax.scatter([x], [y], s=60, color=colour, edgecolor="k", zorder=2)
        gx, gy = setup.goal
        ax.add_patch(plt.Circle((gx, gy), REACH_RADIUS, fill=False, linestyle="--", color="k", zorder=1))
        ax.scatter([gx], [gy], marker="*", s=260, color=setup.instruction.split()[-2], edgecolor="k", zorder=3)
        ax.annotate("goal", (gx, gy), textcoords="offset points", xytext=(8, 8), fontsize=8, weight="bold")
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
              "Success: the simulator's judge saw the robot within "
             f"{REACH_RADIUS:g} m of the goal; the interval is Wilson's 95% score interval over the episodes. "
             "Decisions per minute: answers completed per minute of the episodes. Time to goal: sim time of the "
             "successful episodes. Acceptance: the share of drafted tokens the target accepted; tokens per round: "
             "tokens committed per verification round.", "",
              "| mode | task success | decisions per minute | mean time to goal (s) | mean TTFA (s) | mean TTC (s) | "
              "TTC speedup vs cloud | acceptance | tokens per round | pre-draft hit rate |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in mode_summary(runs, modes):
        lines.append(f"| {row['mode']} | {success_text(row)} | {fmt(row['decisions_per_minute'], 1)} | "
                     f"{fmt(row['task_s'], 1)} | {fmt(row['ttfa_s'])} | {fmt(row['ttc_s'])} | {fmt(row['speedup'])} | "
                     f"{fmt(row['acceptance'])} | {fmt(row['tokens_per_round'])} | {fmt(row['hit_rate'])} |")
    lines += ["", "![latency](latency.png)", "", "![trajectories](trajectories.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"header": header, "modes": modes,
                                                  "episodes": [s.__dict__ for s in setups],
                                                  "per_mode": mode_summary(runs, modes),
                                                  "runs": [r.to_dict() for r in runs]}, indent=1))
    return out / "report.md"
