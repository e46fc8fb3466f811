"""Task success in the sim with a model in the loop, against the scripted expert on the same rooms.

Closed loop, as on the robot: every `replan_s` of sim time the model answers from the current head-
camera view, the answer is parsed by the action grammar and executed (sim/episode.execute). An
answer that does not parse moves nothing: the robot stops and asks again after a short settle (so
a model that only babbles times out, it never moves on a misread sentence).

Held-out rooms come from a seed stream disjoint from the training data's, checked layout by layout.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from spec_edge_cloud.control.actions import ActionError, parse_answer
from spec_edge_cloud.modeling.bundle import ModelBundle
from spec_edge_cloud.sim import episode
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.dataset import episode_seed
from spec_edge_cloud.sim.task import Judge, Outcome
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World

Planner = Callable[[np.ndarray, str], str]   # (RGB view, instruction) -> answer text
HELDOUT_STREAM = 1_000_003                   # seed offset of the held-out layout stream


def heldout_seeds(n: int, seed: int, exclude: set[int] = frozenset()) -> list[int]:
    """n layout seeds from a stream the training data never draws from (and none of `exclude`)."""
    seeds = []
    index = 0
    while len(seeds) < n:
        s = episode_seed(seed + HELDOUT_STREAM, index)
        index += 1
        if s not in exclude:
            seeds.append(s)
    return seeds


def model_planner(bundle: ModelBundle, max_new_tokens: int = 40) -> Planner:
    """Greedy answers of one model (what every lossless mode of the speculative pipeline returns)."""
    eos = sorted(bundle.eos_ids)
    pad = bundle.tokenizer.pad_token_id or 0

    @torch.no_grad()
    def plan(image: np.ndarray, text: str) -> str:
        prompt = bundle.encode(text, image)
        ids = torch.tensor([prompt.input_ids])
        out = bundle.model.generate(ids, **prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int(),
                                    max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                    pad_token_id=pad)
        return bundle.decode(out[0, ids.shape[1]:].tolist())
    return plan


@dataclass
class EpisodeRecord:
    seed: int
    instruction: str
    outcome: Outcome
    answers: int = 0
    unparsed: list[str] = field(default_factory=list)


def run_planner(world: Go2World, camera: HeadCamera, planner: Planner, replan_s: float = episode.REPLAN_S,
                timeout_s: float = 60.0, on_tick: episode.Tick | None = None) -> tuple[Outcome, int, list[str]]:
    """One closed-loop episode from the world's current state; (outcome, answers, unparsed answers)."""
    assert world.layout is not None
    goal = world.layout.goal_object
    text = instruction(goal.colour, goal.shape)
    judge = Judge(world, timeout_s)
    outcome, answers, unparsed = judge.check(), 0, []
    while outcome is None:
        answer = planner(camera.render(world.data), text)
        answers += 1
        try:
            _, actions = parse_answer(answer)
        except ActionError:
            unparsed.append(answer)
            actions = []
        outcome = episode.execute(world, actions, judge, on_tick, budget_s=replan_s)
    world.stop()
    return outcome, answers, unparsed


def evaluate(seeds: list[int], planners: dict[str, Planner | None], image_size: int = 128,
             timeout_s: float = 60.0, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Every planner (None: the scripted expert) on every held-out room; success rates and failures."""
    world = Go2World()
    camera = HeadCamera(world.model, image_size)
    results: dict[str, dict] = {}
    try:
        for name, planner in planners.items():
            records: list[EpisodeRecord] = []
            start = time.perf_counter()
            for s in seeds:
                episode.start(world, s)
                assert world.layout is not None
                goal = world.layout.goal_object
                if planner is None:
                    outcome, answers, unparsed = episode.run_with_expert(world, camera, timeout_s=timeout_s), 0, []
                else:
                    outcome, answers, unparsed = run_planner(world, camera, planner, timeout_s=timeout_s)
                records.append(EpisodeRecord(s, instruction(goal.colour, goal.shape), outcome, answers, unparsed))
            results[name] = summarise(records)
            log(f"{name}: {results[name]['successes']}/{len(seeds)} reached "
                f"({time.perf_counter() - start:.0f} s) {results[name]['reasons']}")
    finally:
        camera.close()
    return results


def summarise(records: list[EpisodeRecord]) -> dict:
    answers = sum(r.answers for r in records)
    unparsed = [a for r in records for a in r.unparsed]
    return {
        "episodes": len(records),
        "successes": sum(r.outcome.success for r in records),
        "success_rate": sum(r.outcome.success for r in records) / len(records),
        "reasons": dict(Counter(r.outcome.reason for r in records)),
        "mean_time_s": round(float(np.mean([r.outcome.time for r in records])), 2),
        "answers": answers,
        "unparsed_answers": len(unparsed),
        "parse_rate": 1 - len(unparsed) / answers if answers else None,
        "unparsed_examples": unparsed[:5],
        "seeds": [r.seed for r in records],
    }
