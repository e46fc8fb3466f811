"""`spec-edge-cloud demo`: the closed loop on the embedded default, each mode on the same episodes.

    spec-edge-cloud demo                       # 10 episodes x (cloud, spec-ee-pre, adaptive), Go2 regime
    spec-edge-cloud demo --regime native       # the models at their own CPU speed
    spec-edge-cloud demo --short               # CI: 1 episode x (cloud, spec-ee-pre), 15 s each

It starts the processes of config/up_sim.yaml (MuJoCo Go2 sim, command node, draft node, verifier
node on loopback behind the link emulator, with the shipped models), then plays the operator: for
each episode ("go to the <colour> <object>", drawn by the seed) and each mode, it switches the
draft node's mode, resets the simulator to the same seed, gives the task, and waits for the
simulator's verdict. It prints per episode the outcome, time to first action and time to
complete, and writes a report (markdown, plots, raw results) under runs/.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

REGIMES = ("go2", "native")
GO2_PROFILE = "go2-orin-a100"
NATIVE_RTT_MS = 120


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--regime", choices=REGIMES, default="go2",
                   help="go2: the paper's Go2 timings, emulated (default); native: the models' own CPU speed")
    p.add_argument("--modes", default="cloud,spec-ee-pre,adaptive", help="comma-separated modes to compare")
    p.add_argument("--episodes", type=int, default=10,
                   help="episodes per mode: enough for a success rate with a 95%% interval of about +-30%% "
                        "(about 30 minutes in the go2 regime; 3 for a quick look)")
    p.add_argument("--seed", type=int, default=0, help="first episode's seed (episode i uses seed + i)")
    p.add_argument("--max-time", type=float, default=60.0,
                   help="sim seconds per episode before it fails (60: the budget of `sim eval` and the model cards)")
    p.add_argument("--short", action="store_true",
                   help="CI size: 1 episode, modes cloud,spec-ee-pre, 15 s per episode")
    p.add_argument("--target", default="models/target", help="target model directory")
    p.add_argument("--draft", default="models/draft", help="draft model directory")
    p.add_argument("--config", default="up_sim", help="the up config whose processes the demo runs")
    p.add_argument("--out", type=Path, default=Path("runs"), help="reports go to OUT/demo-<time>/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def regime_lines(regime: str) -> tuple[list[str], dict]:
    """What the run will say about its timings, and the up-config vars that set them."""
    if regime == "native":
        return ([f"Regime: NATIVE. The models run at their own CPU speed (no timing emulation) behind a "
                 f"{NATIVE_RTT_MS} ms round trip. Speculation pays only when the target's time per token exceeds "
                 "(draft length x draft time per token + round trip + one verification) / tokens committed per "
                 "round (docs/design.md, 'When speculation across a link pays'); small models behind a slow link are "
                 "near or below that line, and adaptive picks whichever it measures faster."],
                {"target_profile": "", "draft_profile": "", "rtt_ms": NATIVE_RTT_MS, "jitter_ms": 0})
    from spec_edge_cloud.decoding.timing import TimingProfile
    profile = TimingProfile.load(GO2_PROFILE)
    rtt = profile.rtt_ms if profile.rtt_ms is not None else NATIVE_RTT_MS
    return ([f"Regime: the paper's Go2 deployment, EMULATED (profile {profile.name}): draft "
             f"{profile.draft_per_token_ms:g} ms per token, verification {profile.target_ms(1.0, 5):.0f} ms per "
             f"5-token pass, {rtt:g} ms round trip (jitter {profile.jitter_ms:g} ms). Real models, protocol and "
             "link; each computation is padded to that hardware's time."],
            {"target_profile": GO2_PROFILE, "draft_profile": GO2_PROFILE, "rtt_ms": rtt,
             "jitter_ms": profile.jitter_ms})


def run(args: argparse.Namespace) -> int:
    if args.short:
        args.episodes, args.modes, args.max_time = 1, "cloud,spec-ee-pre", 15.0
    from spec_edge_cloud.decoding.modes import MODES
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes or args.episodes < 1 or not args.max_time > 0:
        print(f"demo: modes must be among {MODES} (got {bad or 'none'}); episodes >= 1; max-time > 0",
              file=sys.stderr)
        return 2
    for name, path in (("target", args.target), ("draft", args.draft)):
        if not (Path(path) / "config.json").is_file():
            print(f"demo: no {name} model in {path} (a Hugging Face directory with config.json); the shipped "
                  f"models live in models/target and models/draft, or pass --{name} DIR", file=sys.stderr)
            return 2
    from spec_edge_cloud.ros.launcher import LaunchConfigError, ProcessGroup, find_config, load_up_config
    header, timing_vars = regime_lines(args.regime)
    overrides = {"target": args.target, "draft": args.draft, "mode": modes[0], "seed": args.seed,
                 "verifier_port": free_port(), "link_port": free_port(), "publish_instruction": False,
                 "episode_timeout_s": float(args.max_time), **timing_vars}
    try:
        config = load_up_config(find_config(args.config), overrides)
    except (LaunchConfigError, FileNotFoundError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    out = args.out / time.strftime("demo-%Y%m%d-%H%M%S")
    header += [f"Models: target {args.target}, draft {args.draft}. Modes: {', '.join(modes)}. "
               f"Episodes: {args.episodes} (seeds {args.seed}..{args.seed + args.episodes - 1}), "
               f"at most {args.max_time:g} s of sim time each.",
               f"Processes: {', '.join(s.name for s in config.processes)} ({config.path}); logs in {out / 'logs'}."]
    for line in header:
        print(line)
    group = ProcessGroup(config.processes, log_dir=out / "logs", echo=None)
    group.start()
    from spec_edge_cloud.ros.demo_session import DemoSession
    try:
        session = DemoSession(group, out, modes, header)
    except BaseException:
        group.stop()
        raise
    try:
        rc = session.run(args.seed, args.episodes, args.max_time)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping the processes")
        rc = 130
    finally:
        clean = session.close()
    return rc or (0 if clean else 1)
