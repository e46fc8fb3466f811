"""Record simulator episodes straight into a camera + instruction bag (no ROS in the loop).

Each episode is a seeded room driven by the scripted expert, as in `sim dataset`; its instruction
is logged at the episode start and a head-camera frame every `every_s` of sim time, up to
`frames` per episode. Stamps are sim time, episodes laid end to end with a one-second gap, so the
bag reads like one robot's session and the same arguments always give the same frames.
"""
from __future__ import annotations

from pathlib import Path

from spec_edge_cloud.bench.bags import BagWriter
from spec_edge_cloud.sim import episode as runner
from spec_edge_cloud.sim import robot
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.dataset import episode_seed
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World

EPISODE_GAP_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def record_episodes(out: str | Path, episodes: int, seed: int = 0, frames: int = 4, every_s: float = 1.0,
                    image_size: int = 128, progress: bool = False) -> int:
    """Write `episodes` episodes of up to `frames` frames each to a new bag at `out`; returns frames."""
    if episodes < 1 or frames < 1:
        raise ValueError(f"need at least one episode and one frame, got {episodes} episodes, {frames} frames")
    if not every_s > 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    world = Go2World()
    camera = HeadCamera(world.model, image_size)
    ticks_per_frame = max(1, round(every_s / robot.CONTROL_DT))
    clock_ns = 0
    try:
        with BagWriter(out) as bag:
            for index in range(episodes):
                runner.start(world, episode_seed(seed, index))
                assert world.layout is not None
                goal = world.layout.goal_object
                start_s = world.time
                bag.instruction(clock_ns, instruction(goal.colour, goal.shape))
                recorded = 0
                ticks = 0

                def shoot(w: Go2World) -> None:
                    nonlocal recorded
                    if recorded < frames:
                        bag.image(clock_ns + _ns(w.time - start_s) + 1, camera.render(w.data))
                        recorded += 1

                def on_tick(w: Go2World) -> None:
                    nonlocal ticks
                    ticks += 1
                    if ticks % ticks_per_frame == 0:
                        shoot(w)

                shoot(world)
                outcome = runner.run_with_expert(world, camera, timeout_s=(frames - 1) * every_s + robot.CONTROL_DT,
                                                 on_tick=on_tick)
                clock_ns += _ns(world.time - start_s) + EPISODE_GAP_NS
                if progress:
                    print(f"episode {index + 1}/{episodes}: {recorded} frames ({outcome.reason} at "
                          f"{outcome.time:.1f} s)", flush=True)
            return bag.images
    finally:
        camera.close()
