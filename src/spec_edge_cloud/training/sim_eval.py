"""Task success in the sim with a model in the loop, against the scripted expert on the same rooms.

Closed loop, as on the robot (ros/draft_node.py and the command node): every answer is asked from
the current head-camera view, its final words go through the robot's incremental parser, and each
complete action is executed the moment it exists; a sentence that does not parse is dropped and
never moves anything. The next answer is asked `replan_s` of sim time after this one completed (or
once its actions are done and the robot has settled, if that is sooner). The task ends, as the
draft node ends it, when `reached_confirmations` answers in a row say the goal is reached: if the
judge has not seen the robot at the goal by then, the episode fails as "stopped" (the model called
a goal reached where none was).

How long an answer takes: a `model_planner` answers instantly in sim time (the world waits for the
model), which measures what the model says. A `PipelinePlanner` decodes with the real speculative
pipeline in one mode, in process, paced to a regime; the sim then lives through the measured
timeline: the robot stands from the frame until the first action is complete, and every later
action starts no earlier than the moment its last word became final.

Held-out rooms come from a seed stream disjoint from the training data's, checked layout by layout.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from spec_edge_cloud.control.actions import Action, forced_next
from spec_edge_cloud.control.parser import ActionReady, IncrementalParser, Observation, Rejected
from spec_edge_cloud.control.task_loop import Task, TaskSettings, says_reached
from spec_edge_cloud.modeling.bundle import ModelBundle
from spec_edge_cloud.sim import episode
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.dataset import episode_seed
from spec_edge_cloud.sim.task import REACH_RADIUS, Judge, Outcome, success_interval
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World

HELDOUT_STREAM = 1_000_003                   # seed offset of the held-out layout stream
REACHED_CONFIRMATIONS = TaskSettings.reached_confirmations   # the draft node's default


@dataclass(frozen=True)
class Answer:
    """A planner's answer: its final words and, per word, when it became final (seconds after the
    frame was captured). A planner timed as instantaneous gives zeros."""

    words: tuple[str, ...]
    final_s: tuple[float, ...]
    done_s: float = 0.0

    @classmethod
    def instant(cls, text: str) -> "Answer":
        words = tuple(text.split())
        return cls(words, (0.0,) * len(words))

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Planner(Protocol):
    def __call__(self, image: np.ndarray, text: str) -> Answer: ...


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


def training_layouts(model_dir: Path) -> set[int]:
    """The layout seeds a shipped model trained on (expert episodes, DAgger rooms, then contrast
    rooms: consecutive in one stream), read from its card.json; empty when the directory has no
    card (then only the seed streams keep apart)."""
    card = Path(model_dir) / "card.json"
    if not card.is_file():
        return set()
    training = json.loads(card.read_text()).get("training", {})
    target = training.get("target", {})
    rooms = (training.get("episodes", 0) + target.get("dagger", {}).get("episodes", 0)
             + target.get("contrast", {}).get("rooms", 0))
    return {episode_seed(training.get("seed", 0), i) for i in range(rooms)}


def model_planner(bundle: ModelBundle, max_new_tokens: int = 40) -> Planner:
    """Greedy answers of one model (what every lossless mode of the speculative pipeline returns),
    instantly in sim time."""
    eos = sorted(bundle.eos_ids)
    pad = bundle.tokenizer.pad_token_id or 0

    @torch.no_grad()
    def plan(image: np.ndarray, text: str) -> Answer:
        prompt = bundle.encode(text, image)
        ids = torch.tensor([prompt.input_ids], device=bundle.device)
        out = bundle.model.generate(ids, **prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int(),
                                    max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                    pad_token_id=pad)
        return Answer.instant(bundle.decode(out[0, ids.shape[1]:].tolist()))
    return plan


class PipelinePlanner:
    """The speculative pipeline in one mode (draft engine + verifier service over an in-process link
    with the regime's round trip, both paced to the regime's profile when it has one); each answer
    carries the wall-clock time at which each word became final. Frames go through JPEG at the wire's
    quality first, as the robot's do when they cross to the cloud."""

    def __init__(self, draft_dir: Path, target_dir: Path, mode: str, profile_name: str | None, rtt_ms: float,
                 max_new_tokens: int = 40) -> None:
        from spec_edge_cloud.decoding.client import SpecClient
        from spec_edge_cloud.decoding.modes import DecodeConfig
        from spec_edge_cloud.modeling.bundle import load_bundle
        from spec_edge_cloud.transport.assembly import VerifierConfig, open_link, pacer

        self.draft = load_bundle(draft_dir)
        self.link = None if mode == "edge" else \
            open_link(self.draft, inprocess=VerifierConfig(str(target_dir), target_profile=profile_name),
                      rtt_s=rtt_ms / 1000)
        self.client = SpecClient(self.draft, self.link, DecodeConfig(mode=mode, max_new_tokens=max_new_tokens),
                                 pacer=pacer(profile_name), grammar=forced_next)
        self.metrics: list[dict] = []

    def __call__(self, image: np.ndarray, text: str) -> Answer:
        from spec_edge_cloud.modeling import jpeg
        from spec_edge_cloud.transport.protocol import WireOptions

        t0 = time.perf_counter()
        data = None
        if self.link is not None:
            image, data = jpeg.roundtrip(image, WireOptions().jpeg_quality)
        words: list[str] = []
        final_s: list[float] = []

        def on_tokens(kind: str, index: int, tokens: list[int]) -> None:
            if kind == "final":   # unverified words (the cloud went silent) never move the robot
                new = self.draft.decode(tokens).split()
                words.extend(new)
                final_s.extend([time.perf_counter() - t0] * len(new))
        response = self.client.generate(self.draft.encode(text, image, data), on_tokens)
        self.metrics.append(response.metrics.to_dict())
        return Answer(tuple(words), tuple(final_s), time.perf_counter() - t0)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


@dataclass(frozen=True)
class Plan:
    """An answer through the robot's parser: the observation, the actions and when each was complete."""

    observation: str | None
    actions: tuple[Action, ...]
    ready_s: tuple[float, ...]
    rejected: tuple[str, ...]

    @property
    def says_reached(self) -> bool:
        return says_reached(self.observation)


def parse_timed(answer: Answer) -> Plan:
    parser = IncrementalParser()
    observation, actions, ready, rejected = None, [], [], []
    events = [(e, t) for w, t in zip(answer.words, answer.final_s) for e in parser.feed(w)]
    events += [(e, answer.done_s) for e in parser.finish()]
    for event, t in events:
        if isinstance(event, Observation):
            observation = event.text
        elif isinstance(event, ActionReady):
            actions.append(event.action)
            ready.append(t)
        elif isinstance(event, Rejected):
            rejected.append(event.sentence)
    return Plan(observation, tuple(actions), tuple(ready), tuple(rejected))


@dataclass
class EpisodeRecord:
    seed: int
    instruction: str
    outcome: Outcome
    answers: int = 0
    rejected: list[str] = field(default_factory=list)   # answers with a sentence the parser dropped
    near_other: str | None = None     # a failed episode that ended within reach of another object


def run_planner(world: Go2World, camera: HeadCamera, planner: Planner, replan_s: float = episode.REPLAN_S,
                timeout_s: float = 60.0, on_tick: episode.Tick | None = None,
                reached_confirmations: int | None = REACHED_CONFIRMATIONS) -> tuple[Outcome, int, list[str]]:
    """One closed-loop episode from the world's current state; (outcome, answers, the answers in which
    the robot's parser dropped a sentence).
    `reached_confirmations=None`: the task never ends on the model's word (DAgger keeps collecting)."""
    assert world.layout is not None
    goal = world.layout.goal_object
    text = instruction(goal.colour, goal.shape)
    judge = Judge(world, timeout_s)
    outcome, answers, rejected, task = judge.check(), 0, [], Task(text, 0, world.time)
    while outcome is None:
        answer = planner(camera.render(world.data), text)
        plan = parse_timed(answer)
        answers += 1
        if plan.rejected:
            rejected.append(answer.text)
        outcome = episode.execute(world, plan.actions, judge, on_tick, budget_s=answer.done_s + replan_s,
                                  ready_s=plan.ready_s)
        confirmed = task.answered(plan.says_reached, reached_confirmations or 0)
        if outcome is None and reached_confirmations and confirmed:
            outcome = Outcome(False, "stopped", world.goal_distance(), world.time - judge.start_time)
    world.stop()
    return outcome, answers, rejected


def near_other_object(world: Go2World) -> str | None:
    """The name of a non-goal object within REACH_RADIUS of the trunk, if any (the wrong object)."""
    assert world.layout is not None
    x, y, _ = world.pose()
    others = [(math.hypot(o.x - x, o.y - y), o.name) for i, o in enumerate(world.layout.objects)
              if i != world.layout.goal]
    close = [name for d, name in sorted(others) if d <= REACH_RADIUS]
    return close[0] if close else None


def evaluate(seeds: list[int], planners: dict[str, Planner | None], image_size: int = 128,
             timeout_s: float = 60.0, log: Callable[[str], None] = print, progress: bool = False) -> dict[str, dict]:
    """Every planner (None: the scripted expert) on every held-out room; success rates and failures."""
    from tqdm import tqdm

    world = Go2World()
    camera = HeadCamera(world.model, image_size)
    results: dict[str, dict] = {}
    bar = tqdm(total=len(seeds) * len(planners), unit="episode", disable=not progress)
    try:
        for name, planner in planners.items():
            records: list[EpisodeRecord] = []
            start = time.perf_counter()
            for s in seeds:
                episode.start(world, s)
                assert world.layout is not None
                goal = world.layout.goal_object
                if planner is None:
                    outcome, answers, rejected = episode.run_with_expert(world, camera, timeout_s=timeout_s), 0, []
                else:
                    outcome, answers, rejected = run_planner(world, camera, planner, timeout_s=timeout_s)
                records.append(EpisodeRecord(s, instruction(goal.colour, goal.shape), outcome, answers, rejected,
                                             None if outcome.success else near_other_object(world)))
                bar.update()
                bar.set_postfix_str(f"{name}: {sum(r.outcome.success for r in records)}/{len(records)} reached")
            results[name] = summarise(records)
            log(f"{name}: {results[name]['successes']}/{len(seeds)} reached "
                f"({time.perf_counter() - start:.0f} s) {results[name]['reasons']}")
    finally:
        bar.close()
        camera.close()
    return results


def summarise(records: list[EpisodeRecord]) -> dict:
    n = len(records)
    reasons = Counter(r.outcome.reason for r in records)
    successes = reasons.get("reached", 0)
    answers = sum(r.answers for r in records)
    rejected = [a for r in records for a in r.rejected]
    sim_minutes = sum(r.outcome.time for r in records) / 60
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n,
        "success_interval_95": success_interval(successes, n),
        "collision_rate": reasons.get("collision", 0) / n,
        "timeout_rate": reasons.get("timeout", 0) / n,
        "stopped_rate": reasons.get("stopped", 0) / n,
        "fell_rate": reasons.get("fell", 0) / n,
        "reasons": dict(reasons),
        "time_to_goal_s": round(float(np.mean([r.outcome.time for r in records if r.outcome.success])), 2)
        if successes else None,
        "ended_near_another_object": sum(r.near_other is not None for r in records),
        "answers": answers,
        "decisions_per_minute": round(answers / sim_minutes, 1) if answers and sim_minutes else None,
        "parse_rate": 1 - len(rejected) / answers if answers else None,
        "rejected_examples": rejected[:5],
        "seeds": [r.seed for r in records],
        "failures": [{"seed": r.seed, "instruction": r.instruction, "reason": r.outcome.reason,
                      "distance": round(r.outcome.distance, 2), "near": r.near_other}
                     for r in records if not r.outcome.success],
    }
