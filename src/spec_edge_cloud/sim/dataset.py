"""Training data for the default VLMs: (head-camera image, instruction, expert answer) examples.

Each episode is a seeded room with the expert in the loop (episode.run_with_expert). Every
`every_s` of sim time the current view is saved with the answer the expert gives for it, so the
data covers searching, turning toward, approaching and, after the goal is reached, standing at it.
Search views ("no red ball in view . turn left 60 .") are capped per episode so that they do not
swamp the rest; views where the goal is hidden behind another object are left out (see expert.py).

Layout on disk:
    DIR/examples.jsonl   one JSON object per line, keys in this order:
                         image (path relative to DIR), instruction, answer, episode, step, seed
                         (seed: the episode's layout seed, `sim run --seed` replays it)
    DIR/images/ep00000_step000.png ...
Everything is a function of (seed, episodes, image size, sampling): the same arguments give a
byte-identical examples.jsonl and identical images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spec_edge_cloud.sim import episode as runner
from spec_edge_cloud.sim import expert, robot
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.task import REACH_RADIUS, Outcome
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World

EXAMPLES_FILE = "examples.jsonl"
IMAGES_DIR = "images"
REACHED_SETTLE_S = 0.8   # after success, let the robot stop, then record the "reached" view


@dataclass(frozen=True)
class Example:
    image: str
    instruction: str
    answer: str
    episode: int
    step: int
    seed: int

    def to_json(self) -> str:
        return json.dumps({"image": self.image, "instruction": self.instruction, "answer": self.answer,
                           "episode": self.episode, "step": self.step, "seed": self.seed})


class ViewFilter:
    """Which of an episode's expert views make training examples: none where the goal is hidden
    behind an object (the picture cannot show it), and at most `max_search` where it is out of view
    (otherwise turning in search would fill the data set)."""

    def __init__(self, max_search: int):
        self.max_search, self.searches = max_search, 0

    def keep(self, view: expert.View) -> bool:
        if view.occluded:
            return False
        if not view.visible and view.distance > REACH_RADIUS:
            if self.searches >= self.max_search:
                return False
            self.searches += 1
        return True


def episode_seed(seed: int, index: int) -> int:
    """The layout seed of episode `index` of a dataset made with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def generate(out: Path, episodes: int, seed: int, image_size: int = 128, every_s: float = 1.0,
             max_search: int = 2, timeout_s: float = 40.0, world: Go2World | None = None,
             progress: bool = False) -> list[Example]:
    """Write `episodes` episodes of examples under `out` and return them."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if not every_s > 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    out = Path(out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    world = world or Go2World()
    camera = HeadCamera(world.model, image_size)
    examples: list[Example] = []
    try:
        for index in range(episodes):
            new, outcome = _episode(world, camera, out, index, episode_seed(seed, index), every_s,
                                    max_search, timeout_s)
            examples += new
            if progress:
                print(f"episode {index + 1}/{episodes}: {outcome.reason} after {outcome.time:.1f} s, "
                      f"{len(new)} examples", flush=True)
    finally:
        camera.close()
    (out / EXAMPLES_FILE).write_text("".join(e.to_json() + "\n" for e in examples))
    return examples


def _episode(world: Go2World, camera: HeadCamera, out: Path, index: int, layout_seed: int,
             every_s: float, max_search: int, timeout_s: float) -> tuple[list[Example], Outcome]:
    runner.start(world, layout_seed)
    assert world.layout is not None
    goal = world.layout.goal_object
    text = instruction(goal.colour, goal.shape)
    examples: list[Example] = []
    views = ViewFilter(max_search)
    ticks_per_sample = max(1, round(every_s / robot.CONTROL_DT))
    tick_count = 0

    def record(w: Go2World) -> None:
        view = expert.look(w, camera)
        if not views.keep(view):
            return
        step = len(examples)
        name = f"{IMAGES_DIR}/ep{index:05d}_step{step:03d}.png"
        Image.fromarray(camera.render(w.data)).save(out / name)
        examples.append(Example(name, text, expert.answer(w, camera, view), index, step, layout_seed))

    def on_tick(w: Go2World) -> None:
        nonlocal tick_count
        tick_count += 1
        if tick_count % ticks_per_sample == 0:
            record(w)

    record(world)
    outcome = runner.run_with_expert(world, camera, timeout_s=timeout_s, on_tick=on_tick)
    if outcome.success:
        world.advance(REACHED_SETTLE_S)
        record(world)
    return examples, outcome
