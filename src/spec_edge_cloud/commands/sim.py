"""`spec-edge-cloud sim`: training data from the expert, and single expert-driven episodes.

    spec-edge-cloud sim dataset --episodes N --seed S --out DIR [--image-size 128]
    spec-edge-cloud sim run --instruction "go to the red ball" --seed S [--video run.mp4]
    spec-edge-cloud sim record --episodes N --out BAG [--frames 4] (camera + instruction bag, bench/sim_bag.py)
    spec-edge-cloud sim eval --target DIR [--draft DIR --mode MODE --regime go2|native] --episodes N --seed S
                             [--json F]   (closed-loop task success in held-out rooms, beside the expert)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", required=True)
    d = sub.add_parser("dataset", help="write (image, instruction, expert answer) examples")
    d.add_argument("--episodes", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--image-size", type=int, default=128)
    d.add_argument("--every", type=float, default=1.0, help="seconds of sim time between examples")
    d.add_argument("--max-search", type=int, default=2, help="goal-not-in-view examples per episode")
    r = sub.add_parser("run", help="one episode with the expert in the loop")
    r.add_argument("--instruction", default=None,
                   help='"go to the <colour> <object>"; default: the goal the seed draws')
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--image-size", type=int, default=128)
    r.add_argument("--timeout", type=float, default=60.0, help="seconds of sim time")
    r.add_argument("--replan", type=float, default=2.0, help="seconds of sim time between expert answers")
    r.add_argument("--video", type=Path, default=None, help="save head-camera frames (.mp4 or .avi)")
    r.add_argument("--video-fps", type=float, default=10.0, help="frames per second of sim time")
    b = sub.add_parser("record", help="record expert episodes to a rosbag2 MCAP bag (camera + instruction)")
    b.add_argument("--episodes", type=int, required=True)
    b.add_argument("--out", type=Path, required=True, help="new bag directory")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--frames", type=int, default=4, help="frames per episode")
    b.add_argument("--every", type=float, default=1.0, help="seconds of sim time between frames")
    b.add_argument("--image-size", type=int, default=128)
    e = sub.add_parser("eval", help="closed-loop task success of a model (or the pipeline in a mode) in held-out "
                                    "rooms, with the scripted expert on the same rooms")
    e.add_argument("--target", type=Path, default=Path("models/target"), help="target model directory")
    e.add_argument("--draft", type=Path, default=None,
                   help="draft model directory: with --mode, the speculative pipeline answers; alone, the draft does")
    e.add_argument("--mode", default=None, help="decoding mode of the pipeline (needs --draft); default: the "
                                                "model alone, answering instantly in sim time")
    e.add_argument("--regime", choices=("go2", "native"), default="go2",
                   help="with --mode: go2 paces the models to the paper's Go2 timings (emulated); native runs "
                        "them at this CPU's speed behind a 120 ms round trip")
    e.add_argument("--episodes", type=int, default=100, help="held-out rooms")
    e.add_argument("--seed", type=int, default=0, help="seed of the held-out room stream")
    e.add_argument("--timeout", type=float, default=60.0, help="seconds of sim time per room")
    e.add_argument("--no-expert", action="store_true", help="skip the expert's run on the same rooms")
    e.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    e.add_argument("--card", action="store_true",
                   help="write the figures into the model cards of --target and the draft beside it (or --draft): "
                        "card.json 'sim' and README.md (the model alone only, not a --mode)")


def run(args: argparse.Namespace) -> int:
    if args.sim_command == "record":
        from spec_edge_cloud.bench.sim_bag import record_episodes  # the bag writer lives in bench
        try:
            n = record_episodes(args.out, args.episodes, args.seed, args.frames, args.every, args.image_size, True)
        except ValueError as exc:
            print(f"spec-edge-cloud sim record: error: {exc}")
            return 2
        print(f"{n} frames in {args.out}")
        return 0
    if args.sim_command == "eval":
        return _eval(args)
    return _dataset(args) if args.sim_command == "dataset" else _run(args)


def _eval(args: argparse.Namespace) -> int:
    from spec_edge_cloud.decoding.modes import MODES
    from spec_edge_cloud.training import sim_eval

    if args.mode is not None and (args.draft is None or args.mode not in MODES):
        print(f"spec-edge-cloud sim eval: error: --mode needs --draft and one of {', '.join(MODES)}")
        return 2
    if args.card and args.mode is not None:
        print("spec-edge-cloud sim eval: error: --card takes the model alone (the cards' figures), not a --mode")
        return 2
    if args.episodes < 1 or not args.timeout > 0:
        print("spec-edge-cloud sim eval: error: --episodes must be >= 1 and --timeout > 0")
        return 2
    for name, path in (("target", args.target), ("draft", args.draft)):
        if path is not None and not (path / "config.json").is_file():
            print(f"spec-edge-cloud sim eval: error: no {name} model in {path} (a directory with config.json)")
            return 2
    seeds = sim_eval.heldout_seeds(args.episodes, args.seed, exclude=sim_eval.training_layouts(args.target))
    planner, regime, close = _eval_planner(args)
    name = args.mode or ("draft" if args.draft else "target")
    try:
        planners = {name: planner} if args.no_expert else {"expert": None, name: planner}
        results = sim_eval.evaluate(seeds, planners, timeout_s=args.timeout, progress=True)
    finally:
        close()
    mine, expert = results[name], results.get("expert")
    figures = {
        "episodes": mine["episodes"], "success_rate": mine["success_rate"],
        "collision_rate": mine["collision_rate"], "timeout_rate": mine["timeout_rate"],
        "expert_success_rate": expert["success_rate"] if expert else None,
        "policy": name, "target": str(args.target), "draft": str(args.draft) if args.draft else None,
        "mode": args.mode, "regime": regime, "seed": args.seed, "timeout_s": args.timeout,
        "command": "spec-edge-cloud sim eval " + " ".join(_argv(args)),
        "model": mine, "expert": expert,
    }
    print(f"{name} ({regime}): success {mine['successes']}/{mine['episodes']} = {mine['success_rate']:.1%} "
          f"(95% CI {mine['success_interval_95'][0]:.1%}-{mine['success_interval_95'][1]:.1%}), collisions "
          f"{mine['collision_rate']:.1%}, timeouts {mine['timeout_rate']:.1%}, stopped short "
          f"{mine['stopped_rate']:.1%}, time to goal {mine['time_to_goal_s']} s, "
          f"{mine['decisions_per_minute']} decisions per sim minute")
    if expert:
        print(f"expert on the same rooms: {expert['successes']}/{expert['episodes']} = {expert['success_rate']:.1%}, "
              f"time to goal {expert['time_to_goal_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures in {args.json}")
    if args.card:
        from spec_edge_cloud.training import cards
        draft_dir = args.draft or args.target.parent / "draft"
        cards.update_sim(args.target, draft_dir, {k: v for k, v in results.items()}, figures["command"])
        print(f"model cards updated: {args.target}, {draft_dir}")
    return 0


def _eval_planner(args: argparse.Namespace):
    """(planner, the regime in words, close) for the model or pipeline the arguments name."""
    from spec_edge_cloud.modeling.bundle import load_bundle
    from spec_edge_cloud.training import sim_eval

    if args.mode is None:
        bundle = load_bundle(args.draft or args.target)
        return sim_eval.model_planner(bundle), "instant (the sim waits for every answer)", lambda: None
    from spec_edge_cloud.commands.demo import GO2_PROFILE, NATIVE_RTT_MS
    from spec_edge_cloud.decoding.timing import TimingProfile
    if args.regime == "go2":
        rtt = TimingProfile.load(GO2_PROFILE).rtt_ms
        profile, regime = GO2_PROFILE, f"{GO2_PROFILE} EMULATED"
    else:
        profile, rtt, regime = None, NATIVE_RTT_MS, f"native, {NATIVE_RTT_MS} ms round trip"
    planner = sim_eval.PipelinePlanner(args.draft, args.target, args.mode, profile, rtt if rtt is not None
                                       else NATIVE_RTT_MS)
    return planner, regime, planner.close


def _argv(args: argparse.Namespace) -> list[str]:
    out = [f"--target {args.target}", f"--episodes {args.episodes}", f"--seed {args.seed}"]
    if args.draft:
        out.append(f"--draft {args.draft}")
    if args.mode:
        out += [f"--mode {args.mode}", f"--regime {args.regime}"]
    if args.timeout != 60.0:
        out.append(f"--timeout {args.timeout:g}")
    return out


def _dataset(args: argparse.Namespace) -> int:
    from spec_edge_cloud.sim import dataset

    examples = dataset.generate(args.out, args.episodes, args.seed, image_size=args.image_size,
                                every_s=args.every, max_search=args.max_search, progress=True)
    print(f"{len(examples)} examples in {args.out / dataset.EXAMPLES_FILE}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from spec_edge_cloud.sim import episode, robot
    from spec_edge_cloud.sim.camera import HeadCamera
    from spec_edge_cloud.sim.video import VideoWriter
    from spec_edge_cloud.sim.vocab import instruction, parse_instruction
    from spec_edge_cloud.sim.world import Go2World

    goal = parse_instruction(args.instruction) if args.instruction else None
    world = Go2World()
    episode.start(world, args.seed, goal)
    assert world.layout is not None
    target = world.layout.goal_object
    print(f"seed {args.seed}: {instruction(target.colour, target.shape)}; robot at "
          f"({world.layout.start[0]:.2f}, {world.layout.start[1]:.2f}), goal at ({target.x:.2f}, {target.y:.2f})")
    camera = HeadCamera(world.model, args.image_size)
    writer = VideoWriter(args.video, args.video_fps, args.image_size) if args.video else None
    every = max(1, round(1.0 / (args.video_fps * robot.CONTROL_DT)))
    ticks = 0

    def on_tick(w: Go2World) -> None:
        nonlocal ticks
        ticks += 1
        if writer is not None and ticks % every == 0:
            writer.write(camera.render(w.data))

    def on_answer(text: str) -> None:
        print(f"t={world.time:6.2f}s  {text}")

    try:
        outcome = episode.run_with_expert(world, camera, replan_s=args.replan, timeout_s=args.timeout,
                                          on_tick=on_tick, on_answer=on_answer)
    finally:
        if writer is not None:
            writer.close()
        camera.close()
    print(outcome.to_json())
    if writer is not None:
        print(f"{writer.frames} frames in {args.video}")
    return 0 if outcome.success else 1
