"""`spec-edge-cloud sim`: training data from the expert, and single expert-driven episodes.

    spec-edge-cloud sim dataset --episodes N --seed S --out DIR [--image-size 128]
    spec-edge-cloud sim run --instruction "go to the red ball" --seed S [--video run.mp4]
    spec-edge-cloud sim record --episodes N --out BAG [--frames 4] (camera + instruction bag, bench/sim_bag.py)
"""
from __future__ import annotations

import argparse
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
    return _dataset(args) if args.sim_command == "dataset" else _run(args)


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
