"""Reports of the benchmarks: markdown tables and matplotlib plots (Agg backend, files only).

Every report says first which regime it ran in and whether its timings are emulated, so no figure
can be read as a measurement of hardware it was not measured on.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..decoding.modes import AUTO_REUSE_ANSWERS  # noqa: E402

LANE_ROBOT, LANE_CLOUD = 1.0, 0.0
COLOURS = {"edge": "tab:gray", "cloud": "tab:red", "spec": "tab:blue", "spec-ee": "tab:cyan",
           "spec-ee-pre": "tab:green", "adaptive": "tab:purple"}


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.0f}"


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _reuse(n: int) -> str:
    """reuse_answers as the report says it (-1: auto)."""
    return f"{AUTO_REUSE_ANSWERS} in adaptive" if n < 0 else str(n)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.0f}%"


def regime_line(result: dict) -> str:
    if result["emulated"]:
        return (f"**Regime: `{result['regime']}`, timings EMULATED** (real models and protocol, computation "
                f"padded to the profile): {result['regime_description']}")
    return f"**Regime: `native`**: this machine's own speed, timings NOT emulated."


# -- replay ------------------------------------------------------------------------------------------
def replay_table(summary: dict) -> str:
    head = ("| mode | TTFA median ms | TTFA p90 ms | TTC median ms | TTC p90 ms | per-token median ms | "
            "per-token p90 ms | acceptance | tokens/round | exit agreement | pre-draft hit rate | "
            "cloud ms/token | bytes up/token | bytes down/token | speedup vs cloud | TTC/bound |")
    rows = [head, "|" + "---|" * 16]
    for mode, s in summary.items():
        agree = ", ".join(f"L{k}: {v:.2f}" for k, v in s["exit_agreement"].items()) or "n/a"
        rows.append(
            f"| {mode} | {_ms(s['ttfa_s']['median'])} | {_ms(s['ttfa_s']['p90'])} | {_ms(s['ttc_s']['median'])} | "
            f"{_ms(s['ttc_s']['p90'])} | {_ms(s['per_token_s']['median'])} | {_ms(s['per_token_s']['p90'])} | "
            f"{_f(s['acceptance'])} | {_f(s['tokens_per_round'])} | {agree} | {_f(s['hit_rate'])} | "
            f"{_f(s['cloud_s_per_token'] * 1000 if s['cloud_s_per_token'] is not None else None, '{:.1f}')} | "
            f"{_f(s['bytes_up_per_token'], '{:.0f}')} | {_f(s['bytes_down_per_token'], '{:.0f}')} | "
            f"{_f(s['speedup'])} | {_f(s['ttc_over_bound'])} |")
    return "\n".join(rows)


def _calibration_note(cfg: dict) -> str:
    """adaptive's exits, calibrated online (decoding/calibration.py), when they are."""
    if "adaptive" not in cfg["modes"] or not cfg.get("exit_miss_target"):
        return ""
    return (f" (adaptive: each exit's threshold calibrated online to a miss rate below {cfg['exit_miss_target']}, "
            f"Wilson bound at {cfg['exit_bound_confidence']} confidence)")


def replay_markdown(result: dict, plots: list[str] = ()) -> str:
    cfg, summary = result["config"], result["summary"]
    with_action = ", ".join(f"{m} {s['ttfa_s']['responses_with_action']}/{s['responses']}" for m, s in summary.items())
    bound = result["bound"]
    lines = [
        f"# Replay benchmark: `{cfg['bag']}`" if cfg.get("bag") else
        f"# Replay benchmark: {len(cfg['texts'])} held-out text prompts (no camera, no action grammar)", "",
        regime_line(result), "",
        f"- transport: {result['transport']}; link: {result['link']}",
        f"- models: draft `{cfg['draft']}`, target `{cfg['target']}` ({result['target_layers']} layers)",
        f"- {result['frames']} frames x {cfg['repeat']} repeat(s), modes {', '.join(cfg['modes'])}; "
        f"γ = {cfg['gamma']}, at most {cfg['max_new_tokens']} new tokens, exit threshold {cfg['exit_threshold']}"
        f"{_calibration_note(cfg)}; "
        f"{cfg['warmup']} warm-up response(s) per mode not counted; wall time {result['seconds']:.0f} s",
        f"- **{result['lossless']['text']}**", "",
        replay_table(summary), "",
        *([f"Answers reused (the last {_reuse(cfg['reuse_answers'])} per prompt, at most {cfg['reuse_max_tokens']} tokens "
           "a round; decoding/reuse.py): " + "; ".join(
               f"{m}: {_f(s['reused_rounds'])} of rounds extended by one, {_f(s['reused_acceptance'])} of its tokens "
               "accepted"
               for m, s in summary.items() if s["reused_rounds"]), ""]
          if cfg.get("reuse_answers") else []),
        "Early verdicts acted on (shown and pre-drafted on) and the share of them the final verdict contradicted: "
        + "; ".join(f"{m}: {s['early_trusted']}, missed {_f(s['early_miss_rate'])}"
                    for m, s in summary.items() if s.get("early_trusted")) + ".", "",
        *(["Fan-out pre-drafts (branches per rank, 0 on the exit's verdict: sent, share verified): " + "; ".join(
            f"{m}: " + ", ".join(f"rank {k} {n} sent, {_f(s['branch_hit_rate'].get(k))}"
                                 for k, n in s["branches_sent"].items())
            for m, s in summary.items() if len(s.get("branches_sent", {})) > 1), ""]
          if any(len(s.get("branches_sent", {})) > 1 for s in summary.values()) else []),
        "Definitions: docs/design.md \"Metrics\" (bench/summary.py). Times from frame capture (JPEG round trip, "
        "prompt encoding and decoding included). Speedup = TTC(cloud) / TTC(mode) over the same frames. "
        "Cloud ms/token: the verifier's compute for passes and steps (prefill not included).",
        f"TTFA counts responses whose answer completed an action: {with_action} (edge mode's draft-only "
        "words count, as an operator who chose edge mode allows them).",
    ]
    if bound:
        lines.append(f"Bound (a perfect draft, one round): N x {bound['draft_s_per_token'] * 1000:.1f} ms "
                     f"+ RTT {bound['rtt_s'] * 1000:.0f} ms + one verification {bound['verify_s'] * 1000:.1f} ms "
                     "(draft and verification times measured in this run).")
    fallbacks = {m: s["fallbacks"] for m, s in summary.items() if s["fallbacks"]}
    lines.append(f"Responses finished on the robot alone (cloud unreachable or late, tokens unverified): "
                 f"{fallbacks or 'none'}.")
    if result.get("draft_late_s"):
        late = ", ".join(f"{m} {s:.2f} s" for m, s in result["draft_late_s"].items())
        lines.append(f"Emulation: real drafting slower than the profile, in total over the run: {late}.")
    lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def latency_cdf(result: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode in result["summary"]:
        recs = [r for r in result["records"] if r["mode"] == mode]
        for ax, key in zip(axes, ("ttc_s", "per_token")):
            v = np.sort([r["ttc_s"] if key == "ttc_s" else r["ttc_s"] / max(r["tokens"], 1) for r in recs]) * 1000
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=mode, color=COLOURS.get(mode))
    axes[0].set_xlabel("time to complete (ms)")
    axes[1].set_xlabel("per-token latency (ms)")
    for ax in axes:
        ax.set_ylabel("fraction of responses")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    emulated = "EMULATED" if result["emulated"] else "native"
    fig.suptitle(f"Latency CDF per mode: regime {result['regime']} ({emulated}), {result['link']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pick_timeline(records: list[dict]) -> dict | None:
    """The most telling response: spec-ee-pre with both hits and misses, else any speculative one."""
    spec = [r for r in records if r["timeline"] and r["rounds"]]
    for want in ("both", "any"):
        for r in spec:
            outcomes = {d["outcome"] for d in r["timeline"]["drafts"] if d["pre"]}
            if want == "any" or {"hit", "miss"} <= outcomes:
                return r
    return None


def timeline_plot(record: dict, path: Path, title: str = "") -> Path:
    tl = record["timeline"]
    fig, ax = plt.subplots(figsize=(12, 3.6))
    for d in tl["drafts"]:
        colour = {"hit": "tab:green", "miss": "tab:red"}.get(d["outcome"], "tab:blue")
        ax.barh(LANE_ROBOT, (d["end"] - d["start"]) * 1000, left=d["start"] * 1000, height=0.3, color=colour,
                edgecolor="black", linewidth=0.4)
    for p in tl["passes"]:
        ax.barh(LANE_CLOUD, (p["end"] - p["start"]) * 1000, left=p["start"] * 1000, height=0.3, color="0.6",
                edgecolor="black", linewidth=0.4)
    ow = tl["one_way_s"]
    for s in tl["sends"]:
        ax.annotate("", xy=((s["t"] + ow) * 1000, LANE_CLOUD + 0.15), xytext=(s["t"] * 1000, LANE_ROBOT - 0.15),
                    arrowprops=dict(arrowstyle="->", color="tab:orange" if s["pre"] else "tab:blue", lw=0.8))
    for e in tl["early"]:
        ax.annotate("", xy=(e["t"] * 1000, LANE_ROBOT - 0.15), xytext=((e["t"] - ow) * 1000, LANE_CLOUD + 0.15),
                    arrowprops=dict(arrowstyle="->", color="tab:olive", lw=0.8, ls="--"))
    for f in tl["finals"] + tl["tokens"]:
        ax.annotate("", xy=(f["t"] * 1000, LANE_ROBOT - 0.15), xytext=((f["t"] - ow) * 1000, LANE_CLOUD + 0.15),
                    arrowprops=dict(arrowstyle="->", color="black", lw=0.8))
    for t, kind, _, _ in record["events"]:
        if kind in ("final", "unverified"):
            ax.plot([t * 1000] * 2, [LANE_ROBOT + 0.18, LANE_ROBOT + 0.3], color="black", lw=1)
    if record["ttfa_s"] is not None:
        ax.axvline(record["ttfa_s"] * 1000, color="tab:purple", ls=":", lw=1)
    ax.set_yticks([LANE_CLOUD, LANE_ROBOT], ["cloud", "robot"])
    ax.set_ylim(-0.4, 1.5)
    ax.set_xlabel("ms since frame capture")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:green", "tab:red", "0.6")]
    handles += [plt.Line2D([0], [0], color=c, ls=ls) for c, ls in
                (("tab:olive", "--"), ("black", "-"), ("tab:orange", "-"))]
    ax.legend(handles, ["drafting", "pre-draft hit", "pre-draft missed", "verification", "early verdict",
                        "final verdict / token", "pre-draft sent"], fontsize=7, ncol=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.28))
    ax.set_title(title or f"one {record['mode']} response (frame {record['frame']}); ticks: final tokens; cloud "
                 "lane reconstructed from arrivals minus the nominal one-way delay", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_replay(result: dict, out_dir: Path) -> dict[str, Path]:
    """result.json, report.md, latency_cdf.png and timeline.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [latency_cdf(result, out_dir / "latency_cdf.png")]
    chosen = pick_timeline(result["records"])
    if chosen is not None:
        plots.append(timeline_plot(chosen, out_dir / "timeline.png"))
    files = {"json": out_dir / "result.json", "markdown": out_dir / "report.md"}
    files["json"].write_text(json.dumps(result, indent=1, default=str))
    files["markdown"].write_text(replay_markdown(result, [str(p) for p in plots]))
    files.update({p.stem: p for p in plots})
    return files


# -- profile simulator -------------------------------------------------------------------------------
def _paper_line(comp: dict) -> str:
    paper = comp["paper"] or {}
    return paper.get("note", "the paper gives no figure for this regime")


def profile_markdown(result: dict, plots: list[str] = ()) -> str:
    lines = ["# Profile simulator: predicted latency in regimes this machine cannot run", "",
             "All figures below are PREDICTIONS of the discrete-event model (bench/profile_sim.py) from timing "
             "profiles: timings EMULATED, not measured on the hardware named.", ""]
    if result["paper"]:
        lines += headline(result["paper"]) + [""]
    for comp in result["paper"]:
        lines += [f"## Regime `{comp['regime']}`", "", comp["description"], "",
                  f"Paper: {_paper_line(comp)}.", "",
                  f"Simulated: {comp['responses']} responses of {comp['tokens']} tokens, γ = {comp['gamma']}, "
                  f"first early verdict at {comp['exit_fraction']:.0%} of the depth, RTT "
                  f"{comp['link']['rtt_s'] * 1000:.0f} ms (jitter {comp['link']['jitter_s'] * 1000:.0f} ms), "
                  f"seed {result['seed']}. Latency reduction = 1 - TTC(mode) / TTC(cloud).", "",
                  _confidences_line(comp.get("confidences")), "",
                  "Per-token acceptance probability: the simulated draft's tokens are each accepted with it until "
                  "the first miss. Acceptance: the share of drafted tokens accepted, measured on the simulated "
                  "spec-ee-pre rounds (the definition every other table uses).", "",
                  "| per-token acceptance probability | acceptance | tokens/round | exit agreement | spec | spec-ee | "
                  "paper's pre-drafting (client-only) | spec-ee-pre (server-side queue) | pre-drafting gain | adaptive | "
                  "adaptive / best fixed | hit rate |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in comp["grid"]:
            s, ad = g["summary"], g["adaptive"]
            flag = "" if ad["within_5pct"] else " **(> 5%)**"
            lines.append(f"| {g['token_acceptance_prob']:.3f} | {_f(s['spec-ee-pre']['acceptance'])} | "
                         f"{_f(s['spec-ee-pre']['tokens_per_round'])} | {g['agreement']:.1f} | {_pct(g['reduction']['spec'])} | "
                         f"{_pct(g['reduction']['spec-ee'])} | {_pct(g['client_only_reduction'])} | "
                         f"{_pct(g['reduction']['spec-ee-pre'])} | "
                         f"{_pct(g['predraft_gain'])} | {_pct(g['reduction']['adaptive'])} | "
                         f"{ad['adaptive_over_best']:.3f} vs {ad['best_fixed']}{flag} | "
                         f"{_f(s['spec-ee-pre']['hit_rate'])} |")
        lines.append("")
    if result.get("fleet"):
        for fl in result["fleet"]:
            lines += [f"## Fleet: robots sharing one verifier GPU (`{fl['regime']}`, batched verification)", "",
                      f"Per-token acceptance probability {fl['token_acceptance_prob']} (acceptance "
                      f"{fl['acceptance']:.3f}), agreement {fl['agreement']}, {fl['responses_per_robot']} "
                      f"responses of {fl['tokens']} tokens per robot, answered back to back.", "",
                      "| mode | robots | mean TTC ms | per-token ms | GPU ms per token | GPU busy |",
                      "|---|---|---|---|---|---|"]
            for r in fl["rows"]:
                lines.append(f"| {r['mode']} | {r['robots']} | {r['ttc_s'] * 1000:.0f} | {r['per_token_s'] * 1000:.0f} "
                             f"| {r['gpu_s_per_token'] * 1000:.1f} | {r['gpu_utilisation']:.0%} |")
            lines.append("")
    for tr in result.get("traces", []):
        lines += [f"## Recorded traces in `{tr['regime']}`", "",
                  f"The rounds of {tr['responses']} recorded `{tr['source_mode']}` responses (replay in regime "
                  f"`{tr['replay_regime']}`: its acceptance and exit agreement) replayed with this regime's timing.",
                  "", "| mode | mean TTC ms | reduction vs cloud | acceptance | tokens/round | hit rate |",
                  "|---|---|---|---|---|---|"]
        for mode, s in tr["summary"].items():
            lines.append(f"| {mode} | {s['ttc_s']['mean'] * 1000:.0f} | {_pct(tr['reduction'].get(mode))} | "
                         f"{_f(s['acceptance'])} | {_f(s['tokens_per_round'])} | {_f(s['hit_rate'])} |")
        lines.append("")
    for cal in result.get("calibration", []):
        lines += [f"## Calibration against a replay run (`{cal['regime']}`, {cal['transport']})", "",
                  "| mode | measured TTC ms | predicted TTC ms | error |", "|---|---|---|---|"]
        for r in cal["rows"]:
            lines.append(f"| {r['mode']} | {r['measured_ttc_s'] * 1000:.0f} | {r['predicted_ttc_s'] * 1000:.0f} | "
                         f"{r['error']:+.1%}{'' if r['within_10pct'] else ' **(> 10%)**'} |")
        lines.append(f"\nAll within 10%: {'yes' if cal['all_within_10pct'] else 'NO'}.\n")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _confidences_line(conf: dict | None) -> str:
    if conf is None:
        return ("Exit confidences: none (no replay given): adaptive's exits, calibrated online, have nothing to "
                "trust a verdict on, so it never pre-drafts on a shown one here.")
    return (f"Exit confidences: the replay's exit at layer {conf['layer']} ({conf['right']} right and {conf['wrong']} "
            "wrong verdicts), each round's drawn among those as right as it; the agreement sets how often it is.")


def headline(comps: list[dict]) -> list[str]:
    """Ours beside the paper's: middle acceptance of the sweep; ranges over the whole sweep."""
    lines = ["| regime | paper | ours: spec | paper's method (client-only pre-drafting) | ours: spec-ee-pre "
             "(server-side queue) | pre-drafting gain | spec-ee-pre per +0.1 agreement | per-token acceptance "
             "probability (acceptance) for the paper's figure | adaptive / best fixed (worst point) |", "|---|---|---|---|---|---|---|---|---|"]
    for comp in comps:
        paper = comp["paper"] or {}
        said = ", ".join(f"{k} {v:.0%}" for k, v in paper.items() if k != "note") or "none"
        accs = sorted({g["token_acceptance_prob"] for g in comp["grid"]})
        mid = [g for g in comp["grid"] if g["token_acceptance_prob"] == accs[len(accs) // 2]]
        spec = [g["reduction"]["spec"] for g in comp["grid"]]
        pre = [g["reduction"]["spec-ee-pre"] for g in comp["grid"]]
        client = [g["client_only_reduction"] for g in comp["grid"]]
        implied, share = comp.get("implied_token_acceptance_prob"), comp.get("implied_acceptance")
        needed = "n/a" if not paper.get("spec-ee-pre") else (f"{implied:.2f} ({share:.2f})" if implied is not None
                                                             else "> 0.99")
        gain = [g["predraft_gain"] for g in comp["grid"]]
        slope = (mid[-1]["reduction"]["spec-ee-pre"] - mid[0]["reduction"]["spec-ee-pre"]) / max(
            (mid[-1]["agreement"] - mid[0]["agreement"]) * 10, 1e-9)
        worst = max(g["adaptive"]["adaptive_over_best"] for g in comp["grid"])
        lines.append(f"| `{comp['regime']}` | {said} | {_pct(min(spec))} to {_pct(max(spec))} | {_pct(min(client))} "
                     f"to {_pct(max(client))} | {_pct(min(pre))} to {_pct(max(pre))} | {_pct(min(gain))} to "
                     f"{_pct(max(gain))} | {slope * 100:+.1f} points | {needed} | "
                     f"{worst:.2f}{'' if worst <= 1.05 else ' **(> 1.05)**'} |")
    lines += ["", "Ranges over the sweep (per-token acceptance probability x exit agreement); latency reduction = "
              "1 - TTC(mode) / TTC(cloud); pre-drafting gain = 1 - TTC(spec-ee-pre) / TTC(spec-ee). Acceptance for the paper's "
              "figure: the per-token acceptance probability (and, in brackets, the acceptance: the share of drafted "
              "tokens accepted) at which the paper's method (client-only pre-drafting, exit "
              "agreement 0.7) reaches the paper's reduction with this regime's timing."]
    return lines


def sensitivity_plot(result: dict, path: Path) -> Path:
    comps = result["paper"]
    fig, axes = plt.subplots(1, len(comps), figsize=(5 * len(comps), 3.8), squeeze=False)
    for ax, comp in zip(axes[0], comps):
        probs = sorted({g["token_acceptance_prob"] for g in comp["grid"]})
        for a in probs:
            pts = [g for g in comp["grid"] if g["token_acceptance_prob"] == a]
            ax.plot([g["agreement"] for g in pts], [g["reduction"]["spec-ee-pre"] * 100 for g in pts], marker="o",
                    label=f"spec-ee-pre, p = {a:.3f}")
        a_mid = probs[len(probs) // 2]
        pts = [g for g in comp["grid"] if g["token_acceptance_prob"] == a_mid]
        ax.plot([g["agreement"] for g in pts], [g["reduction"]["spec"] * 100 for g in pts], ls="--", color="0.4",
                label=f"spec, p = {a_mid:.3f}")
        for key, value in (comp["paper"] or {}).items():
            if key == "spec-ee-pre":
                ax.axhline(value * 100, color="tab:red", ls=":", label="paper")
        ax.set_xlabel("exit agreement")
        ax.set_ylabel("latency reduction vs cloud (%)")
        ax.set_title(f"{comp['regime']} (EMULATED)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fleet_plot(result: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for fl in result["fleet"]:
        for mode in dict.fromkeys(r["mode"] for r in fl["rows"]):
            rows = [r for r in fl["rows"] if r["mode"] == mode]
            n = [r["robots"] for r in rows]
            axes[0].plot(n, [r["per_token_s"] * 1000 for r in rows], marker="o", label=f"{fl['regime']} {mode}")
            axes[1].plot(n, [r["gpu_s_per_token"] * 1000 for r in rows], marker="o", label=f"{fl['regime']} {mode}")
    for ax, label in zip(axes, ("per-token latency (ms)", "GPU ms per token")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("robots sharing one GPU")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fleet (simulated, batched verification; EMULATED timings)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_profile(result: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [sensitivity_plot(result, out_dir / "sensitivity.png")] if result.get("paper") else []
    if result.get("fleet"):
        plots.append(fleet_plot(result, out_dir / "fleet.png"))
    files = {"json": out_dir / "result.json", "markdown": out_dir / "report.md"}
    files["json"].write_text(json.dumps(result, indent=1, default=str))
    files["markdown"].write_text(profile_markdown(result, [str(p) for p in plots]))
    files.update({p.stem: p for p in plots})
    return files
