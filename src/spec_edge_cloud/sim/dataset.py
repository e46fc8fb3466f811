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

`generate_contrast` writes the same format from another kind of room: distractors that share the
goal's colour or shape (`scene.random_layout(seed, confusers=...)`), and the robot placed facing
each object in turn, near and far. The expert's own trajectories rarely face a wrong object, so a
model trained on them alone calls whatever salient object it sees the goal ("red ball ahead" at a
red cone, then "red ball reached" beside it); these views show it the same room's goal and its
look-alikes with the expert's answer for each ("no red ball in view . turn left 60 ." at the cone).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spec_edge_cloud.sim import episode as runner
from spec_edge_cloud.sim import expert, robot, scene
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
    examples: list[Example] = []
    with _recording(out, world, image_size) as (out, world, camera):
        for index in range(episodes):
            new, outcome = _episode(world, camera, out, index, episode_seed(seed, index), every_s,
                                    max_search, timeout_s)
            examples += new
            if progress:
                print(f"episode {index + 1}/{episodes}: {outcome.reason} after {outcome.time:.1f} s, "
                      f"{len(new)} examples", flush=True)
    (out / EXAMPLES_FILE).write_text("".join(e.to_json() + "\n" for e in examples))
    return examples


@contextmanager
def _recording(out: Path, world: Go2World | None, image_size: int) -> Iterator[tuple[Path, Go2World, HeadCamera]]:
    """The output directory (made), the world (a new one unless given) and a head camera on it,
    closed afterwards."""
    out = Path(out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    world = world or Go2World()
    camera = HeadCamera(world.model, image_size)
    try:
        yield out, world, camera
    finally:
        camera.close()


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


CONTRAST_SETTLE_S = 0.3        # after placing the robot, let it find its feet before the view is taken
CONTRAST_NEAR_M = (0.65, 1.3)  # half the views: the object fills the view (where "reached" gets confused)
CONTRAST_FAR_M = (1.3, 3.2)    # the other half: it is one object among others
CONTRAST_YAW_SPREAD = 0.4      # rad either side of facing the object: it lands anywhere across the image
CLOSE_M = (0.6, 0.95)          # where the contrast-trained target still called a wrong object "reached"
CLOSE_SIDE_SPREAD = 0.6        # rad: how far around the object from the goal's line a "behind" view stands


def generate_contrast(out: Path, layout_seeds: list[int], confusers: int = 2, image_size: int = 128,
                      world: Go2World | None = None, every_goal: bool = False) -> list[Example]:
    """One view facing each object of every room (goal and distractors, `confusers` of them alike
    the goal), each with the expert's answer; written under `out` like `generate`'s examples.

    With `every_goal`, each view also comes with the instruction to go to every other object of
    the room and the expert's answer to it: the same pixels under instructions that differ in one
    word get different answers, which only reading the shape (or colour) in the picture explains.

    A record's `seed` is the room's layout seed, drawn with `confusers` (not `sim run --seed`'s room)."""
    return _room_views(out, layout_seeds, confusers, image_size, world, "contrast", _facing_poses, every_goal)


def generate_close(out: Path, layout_seeds: list[int], confusers: int = 2, image_size: int = 128,
                   world: Go2World | None = None, every_goal: bool = False) -> list[Example]:
    """Views with an object filling the picture, where a model that learned "a big object ahead is
    the goal" says "reached": facing each object of every room from CLOSE_M (at the goal the
    expert says "reached"; at a look-alike "no red ball in view", or where the goal is), and
    standing close behind each other object with the goal beyond it (the goal is then beside the
    object in the picture, and the expert walks around it; views where it hides the goal are left
    out). Written under `out` like `generate_contrast`'s (images `close00000_step000.png`), and
    `every_goal` as there."""
    return _room_views(out, layout_seeds, confusers, image_size, world, "close", _close_poses, every_goal)


PoseSource = Callable[[scene.Layout, int, int], Iterator[tuple[float, float, float] | None]]


def _facing_poses(layout: scene.Layout, index: int, layout_seed: int) -> Iterator[tuple[float, float, float] | None]:
    rng = np.random.default_rng([layout_seed, 1])
    for facing in range(len(layout.objects)):
        near = (index + facing) % 2 == 0
        yield _pose_facing(layout, facing, rng, CONTRAST_NEAR_M if near else CONTRAST_FAR_M)


def _close_poses(layout: scene.Layout, index: int, layout_seed: int) -> Iterator[tuple[float, float, float] | None]:
    rng = np.random.default_rng([layout_seed, 2])
    for facing in range(len(layout.objects)):
        yield _pose_facing(layout, facing, rng, CLOSE_M)
    for other in range(len(layout.objects)):
        if other != layout.goal:
            yield _pose_behind(layout, other, rng)


def _room_views(out: Path, layout_seeds: list[int], confusers: int, image_size: int, world: Go2World | None,
                prefix: str, poses: PoseSource, every_goal: bool = False) -> list[Example]:
    """The expert's answer for every pose `poses` gives in every look-alike room, written under `out`
    (for the room's goal, or with `every_goal` for each of its objects as the goal in turn)."""
    if not layout_seeds:
        raise ValueError("no rooms to take contrast views in")
    examples: list[Example] = []
    with _recording(out, world, image_size) as (out, world, camera):
        for index, layout_seed in enumerate(layout_seeds):
            layout = scene.random_layout(layout_seed, confusers=confusers)
            goals = [layout.goal] + [i for i in range(len(layout.objects)) if every_goal and i != layout.goal]
            step = 0
            for pose in poses(layout, index, layout_seed):
                if pose is None:
                    continue
                world.reset(scene.Layout(layout.objects, layout.goal, pose))
                world.advance(CONTRAST_SETTLE_S)
                name = f"{IMAGES_DIR}/{prefix}{index:05d}_step{step:03d}.png"
                answers = [(goal, _answer_for(world, camera, goal)) for goal in goals]
                answers = [(goal, text) for goal, text in answers if text is not None]
                if not answers:
                    continue
                Image.fromarray(camera.render(world.data)).save(out / name)
                for goal, text in answers:
                    obj = layout.objects[goal]
                    examples.append(Example(name, instruction(obj.colour, obj.shape), text, index, step, layout_seed))
                step += 1
    (out / EXAMPLES_FILE).write_text("".join(e.to_json() + "\n" for e in examples))
    return examples


def _answer_for(world: Go2World, camera: HeadCamera, goal: int) -> str | None:
    """The expert's answer with object `goal` of the room as the goal (the robot where it stands),
    or None where the picture cannot show the goal the answer names (hidden, or beside the robot)."""
    world.set_goal(goal)
    view = expert.look(world, camera)
    if view.occluded or (view.distance <= REACH_RADIUS and not view.visible):
        return None
    return expert.answer(world, camera, view)


def _free(layout: scene.Layout, x: float, y: float) -> bool:
    """Whether the robot can stand at (x, y): inside the walls, clear of every object."""
    inside = scene.ROOM_HALF - 0.45
    return abs(x) <= inside and abs(y) <= inside and all(math.hypot(o.x - x, o.y - y) >= 0.6 for o in layout.objects)


def _pose_facing(layout: scene.Layout, index: int, rng: np.random.Generator,
                 band: tuple[float, float]) -> tuple[float, float, float] | None:
    """A robot pose (x, y, yaw) facing object `index` from `band` metres away, or None."""
    obj = layout.objects[index]
    low, high = band
    for _ in range(100):
        distance, approach = rng.uniform(low, high), rng.uniform(-math.pi, math.pi)
        x, y = obj.x - distance * math.cos(approach), obj.y - distance * math.sin(approach)
        if not _free(layout, x, y):
            continue
        return x, y, approach + rng.uniform(-CONTRAST_YAW_SPREAD, CONTRAST_YAW_SPREAD)
    return None


def _pose_behind(layout: scene.Layout, index: int, rng: np.random.Generator) -> tuple[float, float, float] | None:
    """A pose CLOSE_M from object `index` on its side away from the goal, facing it (the goal
    beyond it, beside it in the picture or hidden), or None."""
    obj, goal = layout.objects[index], layout.goal_object
    towards_goal = math.atan2(goal.y - obj.y, goal.x - obj.x)
    for _ in range(100):
        distance = rng.uniform(*CLOSE_M)
        approach = towards_goal + rng.uniform(-CLOSE_SIDE_SPREAD, CLOSE_SIDE_SPREAD)
        x, y = obj.x - distance * math.cos(approach), obj.y - distance * math.sin(approach)
        if not _free(layout, x, y):
            continue
        return x, y, approach + rng.uniform(-CONTRAST_YAW_SPREAD, CONTRAST_YAW_SPREAD)
    return None
