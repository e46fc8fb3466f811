"""Why a VLM target calls the wrong object reached: what it says it sees, beside what the expert sees.

    .venv/bin/python benchmarks/observation_confusion.py views --model models/target --data DIR [--sample 200]
    .venv/bin/python benchmarks/observation_confusion.py rooms --model models/target SEED [SEED ...]

`views`: greedy answers on the views of a data directory (`sim dataset`, or the recipe's
contrast-sN / close-sN under its --work), counted by the kind of their first sentence, the expert's
against the model's: absent ("no red ball in view"), goal (in view, not reached) or reached. On
views the model trained on, this separates a model that cannot fit the distinction from one that
has not seen it. `rooms`: held-out rooms (the seeds a card's `sim.target.failures` lists) driven
as `sim eval` drives them, every answer printed beside the expert's for the same view and the two
nearest objects (distance m, bearing degrees, positive to the left); the views are saved as PNG
under --views when given.
"""
from __future__ import annotations

import argparse
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spec_edge_cloud.control.task_loop import says_reached
from spec_edge_cloud.modeling.bundle import load_bundle
from spec_edge_cloud.modeling.vlm_training import EncodedExamples, greedy_answers
from spec_edge_cloud.sim import episode, expert
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.world import Go2World
from spec_edge_cloud.training import sim_eval
from spec_edge_cloud.training.data import read_dataset

KINDS = ("absent", "goal", "reached")


def kind(answer: str) -> str:
    observation = answer.split(" . ")[0]
    return "reached" if says_reached(observation) else "absent" if observation.startswith("no ") else "goal"


def views(model: Path, data: Path, sample: int, seed: int) -> None:
    bundle = load_bundle(model)
    examples, _ = read_dataset(data)
    examples = random.Random(seed).sample(examples, min(sample, len(examples)))
    answers = greedy_answers(bundle, EncodedExamples(bundle, examples))
    counts = Counter((kind(e.answer), kind(a)) for e, a in zip(examples, answers))
    print(f"{model} on {len(examples)} views of {data}: rows the expert's kind, columns the model's")
    print(f"| expert \\ model | {' | '.join(KINDS)} |\n| --- |" + " --- |" * len(KINDS))
    for want in KINDS:
        print(f"| {want} | " + " | ".join(str(counts[(want, got)]) for got in KINDS) + " |")


def rooms(model: Path, seeds: list[int], timeout_s: float, out: Path | None) -> None:
    plan = sim_eval.model_planner(load_bundle(model))
    world = Go2World()
    camera = HeadCamera(world.model, 128)
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        episode.start(world, seed)
        layout = world.layout
        assert layout is not None
        print(f"room {seed}: goal {layout.goal_object.name}, objects "
              + ", ".join(f"{o.name} ({o.x:.1f}, {o.y:.1f})" for o in layout.objects))
        count = 0

        def planner(image: np.ndarray, text: str) -> sim_eval.Answer:
            nonlocal count
            answer = plan(image, text)
            x, y, yaw = world.pose()
            nearest = sorted((math.hypot(o.x - x, o.y - y), o.name, math.degrees(math.remainder(
                math.atan2(o.y - y, o.x - x) - yaw, 2 * math.pi))) for o in layout.objects)[:2]
            print(f"  {count:02d} model: {answer.text}\n     expert: {expert.answer(world, camera)}\n     nearest: "
                  + ", ".join(f"{name} {d:.2f} m {b:+.0f} deg" for d, name, b in nearest))
            if out:
                Image.fromarray(image).save(out / f"{seed}_{count:02d}.png")
            count += 1
            return answer
        outcome, _, _ = sim_eval.run_planner(world, camera, planner, timeout_s=timeout_s)
        print(f"  -> {outcome.reason}, {outcome.distance:.2f} m from the goal")
    camera.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    v = sub.add_parser("views")
    v.add_argument("--model", type=Path, required=True)
    v.add_argument("--data", type=Path, required=True)
    v.add_argument("--sample", type=int, default=200)
    v.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("rooms")
    r.add_argument("--model", type=Path, required=True)
    r.add_argument("seeds", type=int, nargs="+")
    r.add_argument("--timeout", type=float, default=60.0)
    r.add_argument("--views", type=Path, help="save each view here as SEED_NN.png")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.what == "views":
        views(args.model, args.data, args.sample, args.seed)
    else:
        rooms(args.model, args.seeds, args.timeout, args.views)


if __name__ == "__main__":
    main()
