"""MuJoCo Go2 simulation speed and gait tracking: the figures in docs/sim.md.

    .venv/bin/python benchmarks/bench_sim.py [--seconds 10] [--no-tracking] [--variants] [--episodes 40]

Prints: raw physics steps/s; head-camera frames/s at 128x128 and 224x224; the real-time factor
of the robot walking under commands (physics + walking policy at 50 Hz), without the camera and with
it rendering 10 frames per sim second; and (unless --no-tracking) the gait-tracking trials
of sim/tracking.py; --variants repeats them for the bare policy on the MJCF's own physics and for
the fitted physics without the velocity trim (what each fix changes); --episodes N runs N seeded
go-to-object episodes with the expert, closed loop (re-plan every 2 s) and open loop (each answer
run to its end), and prints their success rates. Timings are wall-clock on
this machine's CPU, single process.
"""
from __future__ import annotations

import argparse
import time

from text_table import Table

from spec_edge_cloud.sim import episode, robot, scene, tracking  # before mujoco: it picks MUJOCO_GL=egl
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.world import Go2World

import mujoco  # noqa: E402,I001


def physics_steps_per_s(world: Go2World, steps: int = 4000) -> float:
    world.reset(scene.random_layout(0))
    world.advance(0.5)  # standing, feet in contact
    t = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(world.model, world.data)
    return steps / (time.perf_counter() - t)


def walk(world: Go2World, seconds: float, camera: HeadCamera | None, frames_per_s: float = 10.0) -> float:
    """Real-time factor of a walk-turn-walk routine (sim seconds per wall second)."""
    world.reset(scene.Layout(objects=(scene.SceneObject("red", "ball", 2.6, 2.6),), goal=0,
                             start=(-1.5, -1.5, 0.0)))
    every = max(1, round(1.0 / (frames_per_s * robot.CONTROL_DT)))
    ticks = round(seconds / robot.CONTROL_DT)
    t = time.perf_counter()
    for k in range(ticks):
        phase = (k * robot.CONTROL_DT) % 6.0
        world.set_velocity(*((0.5, 0.0, 0.0) if phase < 3.0 else (0.0, 0.0, 0.8)))
        world.tick()
        if camera is not None and k % every == 0:
            camera.render(world.data)
    return ticks * robot.CONTROL_DT / (time.perf_counter() - t)


def frames_per_s(world: Go2World, size: int, frames: int = 100) -> float:
    camera = HeadCamera(world.model, size)
    try:
        world.reset(scene.random_layout(3))
        world.advance(0.2)
        camera.render(world.data)
        t = time.perf_counter()
        for _ in range(frames):
            camera.render(world.data)
        return frames / (time.perf_counter() - t)
    finally:
        camera.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="sim seconds per walking run")
    parser.add_argument("--no-tracking", action="store_true")
    parser.add_argument("--variants", action="store_true",
                        help="also track with the MJCF's own physics and without the velocity trim")
    parser.add_argument("--episodes", type=int, default=0, help="expert episodes to run (0: none)")
    args = parser.parse_args()
    world = Go2World()

    speed = Table(title="MuJoCo Go2 sim speed (this CPU)")
    speed.add_column("measure")
    speed.add_column("value", justify="right")
    speed.add_row("physics steps/s (dt 2.5 ms)", f"{physics_steps_per_s(world):,.0f}")
    for size in (128, 224):
        speed.add_row(f"head camera frames/s at {size}x{size}", f"{frames_per_s(world, size):,.1f}")
    speed.add_row("real-time factor, walking, no camera", f"{walk(world, args.seconds, None):.1f}x")
    for size in (128, 224):
        camera = HeadCamera(world.model, size)
        try:
            speed.add_row(f"real-time factor, walking, camera {size}x{size} at 10 Hz",
                          f"{walk(world, args.seconds, camera):.1f}x")
        finally:
            camera.close()
    print(speed)

    if args.episodes:
        print(episodes_table(world, args.episodes))
    if args.no_tracking:
        return
    variants = [("fitted physics + velocity trim (the sim)", world)]
    if args.variants:
        variants = [("MJCF physics, bare policy", Go2World(fitted=False, trim=False)),
                    ("fitted physics, bare policy", Go2World(trim=False))] + variants
    for title, w in variants:
        print(tracking_table(w, f"Gait tracking: {title}"))


def episodes_table(world: Go2World, n: int) -> Table:
    table = Table(title=f"Expert episodes, seeds 0..{n - 1} (sim/episode.py)")
    for column in ("execution", "success", "mean time s (successes)", "failures"):
        table.add_column(column)
    camera = HeadCamera(world.model, 128)
    try:
        for label, replan in (("closed loop, re-plan every 2 s", episode.REPLAN_S),
                              ("open loop, each answer to its end", None)):
            outcomes = []
            for seed in range(n):
                episode.start(world, seed)
                outcomes.append(episode.run_with_expert(world, camera, replan_s=replan))
            wins = [o for o in outcomes if o.success]
            failures = ", ".join(f"seed {i}: {o.reason}" for i, o in enumerate(outcomes) if not o.success)
            table.add_row(label, f"{len(wins)}/{n}",
                          f"{sum(o.time for o in wins) / max(len(wins), 1):.1f}", failures or "-")
    finally:
        camera.close()
    return table


def tracking_table(world: Go2World, title: str) -> Table:
    table = Table(title=title)
    for column in ("command vx vy wz", "s", "steady vx vy wz", "forward m", "sideways m",
                   "heading change deg", "end error m", "heading error deg", "fell"):
        table.add_column(column, justify="right")
    for command, duration in tracking.STANDARD_TRIALS:
        r = tracking.track(world, command, duration)
        table.add_row(" ".join(f"{v:+.1f}" for v in command), f"{duration:.0f}",
                      " ".join(f"{v:+.2f}" for v in r.speed), f"{r.forward:+.3f}", f"{r.sideways:+.3f}",
                      f"{r.heading_change_deg:+.1f}", f"{r.end_error:.3f}", f"{r.heading_error_deg:+.1f}",
                      "yes" if r.fell else "no")
    return table

if __name__ == "__main__":
    main()
