"""One round of DAgger: let the trained model drive, and ask the expert what it should have said.

The expert's dataset only holds views the expert itself reaches. A model that errs a little walks
into views the expert never saw (up against a wall, past the goal) and there it can say anything;
the first model here, facing a bare wall, said "<goal> reached . stop ." and stood still until the
timeout. Recording the expert's answers along the model's own trajectories and training on them
teaches the model to recover from its own mistakes (Ross, Gordon and Bagnell, 2011).
"""
from __future__ import annotations

import time
from typing import Callable

from spec_edge_cloud.modeling.vlm_training import Example
from spec_edge_cloud.sim import episode, expert, robot
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.dataset import ViewFilter
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World
from spec_edge_cloud.training.sim_eval import Planner, run_planner


def collect(planner: Planner, layout_seeds: list[int], every_s: float = 1.0, max_per_episode: int = 12,
            max_search: int = 2, timeout_s: float = 40.0, image_size: int = 128,
            log: Callable[[str], None] = print) -> tuple[list[Example], dict]:
    """Expert-labelled views along the planner's closed-loop trajectories in the given rooms.

    The expert's dataset's `ViewFilter` picks the views; a stuck robot would otherwise repeat one
    view many times, so each episode also gives at most `max_per_episode` views.
    """
    world = Go2World()
    camera = HeadCamera(world.model, image_size)
    examples: list[Example] = []
    outcomes = []
    ticks_per_sample = max(1, round(every_s / robot.CONTROL_DT))
    start = time.perf_counter()
    try:
        for seed in layout_seeds:
            episode.start(world, seed)
            goal = world.layout.goal_object
            text = instruction(goal.colour, goal.shape)
            mine: list[Example] = []
            views, ticks = ViewFilter(max_search), 0

            def record(w: Go2World) -> None:
                nonlocal ticks
                ticks += 1
                if ticks % ticks_per_sample or len(mine) >= max_per_episode:
                    return
                view = expert.look(w, camera)
                if views.keep(view):
                    mine.append(Example(camera.render(w.data), text, expert.answer(w, camera, view)))

            outcome, _, _ = run_planner(world, camera, planner, timeout_s=timeout_s, on_tick=record,
                                        reached_confirmations=None)  # keep collecting views after a false "reached"
            outcomes.append(outcome.success)
            examples += mine
    finally:
        camera.close()
    stats = {"episodes": len(layout_seeds), "examples": len(examples),
             "model_success_rate": sum(outcomes) / len(outcomes) if outcomes else None,
             "seconds": round(time.perf_counter() - start, 1)}
    log(f"dagger: {len(examples)} expert-labelled views from {len(layout_seeds)} rooms driven by the model "
        f"(it reached {sum(outcomes)}), {stats['seconds']:.0f} s")
    return examples, stats
