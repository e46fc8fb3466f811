"""The recipe of the embedded VLM pair: sim data -> target -> distilled draft -> exit heads -> figures.

Every step is seeded, so `spec-edge-cloud train --seed S` makes the same models from the same data
(on the same software stack). The figures of the model cards are measured here, on data the models
never saw: frames of held-out episodes (answers, acceptance, exit agreement) and closed-loop runs in
held-out rooms (task success, beside the scripted expert on the same rooms).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from spec_edge_cloud.control.actions import ActionError, parse_answer
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.modeling import family
from spec_edge_cloud.modeling.bundle import ModelBundle, load_bundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads, attend_positions, default_exit_layers
from spec_edge_cloud.modeling.exit_training import agreement, round_agreement, teacher_data, train_exit_heads
from spec_edge_cloud.modeling.layer_draft import cut_draft
from spec_edge_cloud.modeling.layers import decoder_parts
from spec_edge_cloud.modeling.placement import CPU_FP32, Placement, autocast
from spec_edge_cloud.modeling.vlm_training import (EncodedExamples, Example, TrainConfig, greedy_answers,
                                                   teacher_logits, train)
from spec_edge_cloud.sim import dataset as sim_dataset
from spec_edge_cloud.training import dagger, sim_eval, spec_eval
from spec_edge_cloud.training.data import read_dataset, task_words

Log = Callable[[str], None]


@dataclass(frozen=True)
class Budget:
    """How much of everything: the default is the shipped models' recipe, `quick()` a smoke test."""

    episodes: int = 400             # training episodes of the expert in the sim (about 7.5 frames each)
    target_steps: int = 2000
    dagger_episodes: int = 120      # rooms the trained target drives while the expert labels its views
    dagger_steps: int = 800         # then the target trains on expert + DAgger views
    dagger_timeout_s: float = 40.0  # sim time per DAgger room
    contrast_rooms: int = 400       # rooms with look-alike distractors, one view facing each object
    contrast_steps: int = 2400      # then the target trains on expert + contrast views
    close_views: bool = True        # the contrast stage also trains on close views (sim_dataset.generate_close)
    contrast_repeat: int = 1        # the stage's look-alike views count this many times beside the expert's
    every_goal: bool = True         # each look-alike view also under the instruction to go to each other object
    draft_keep: int = 3             # the draft: the trained target's first layers and its last (layer_draft.cut_draft)
    draft_steps: int = 2000         # distilled toward it on the contrast stage's views (KL to its logits)
    exit_steps: int = 1500
    exit_prompts: int = 2500        # training frames the exit heads learn from (the target's own answers)
    exit_rank: int = 512            # the adapters' hidden width (a rank-32 head underfits the round verdicts)
    exit_ce: float = 1.0            # weight of the round-verdict objective beside the KL (exit_training.py)
    exit_gamma: int = 4             # the draft length of the rounds the exits are measured on
    exit_attend: int = 1            # the first this many exits attend over the sequence (exit_heads.py)
    heldout_episodes: int = 20      # frames of these held-out episodes: answers, acceptance, agreement
    spec_frames: int = 60           # held-out frames decoded speculatively
    sim_episodes: int = 100         # closed-loop held-out rooms per policy (= `sim eval --episodes 100`)
    sim_timeout_s: float = 60.0     # sim time per room
    batch: int = 32

    @classmethod
    def quick(cls) -> "Budget":
        return cls(episodes=2, target_steps=3, dagger_episodes=1, dagger_steps=2, dagger_timeout_s=2.0,
                   contrast_rooms=1, contrast_steps=2, close_views=True, contrast_repeat=2,
                   every_goal=True, draft_keep=1, draft_steps=3,
                   exit_steps=3, exit_prompts=4, exit_rank=8, heldout_episodes=1, spec_frames=2,
                   sim_episodes=1, sim_timeout_s=2.0, batch=4)


@dataclass
class FamilyReport:
    target_dir: Path
    draft_dir: Path
    figures: dict = field(default_factory=dict)


def make_dataset(directory: Path, episodes: int, seed: int, log: Log) -> Path:
    """The expert's examples for `seed`, generated once (reused when the directory already holds them)."""
    if (directory / sim_dataset.EXAMPLES_FILE).is_file():
        log(f"dataset: reusing {directory}")
        return directory
    start = time.perf_counter()
    examples = sim_dataset.generate(directory, episodes, seed)
    log(f"dataset: {len(examples)} examples from {episodes} episodes in {time.perf_counter() - start:.0f} s")
    return directory


def make_views(directory: Path, layout_seeds: list[int], generate: Callable[[Path, list[int]], list],
               what: str, log: Log) -> Path:
    """Views of look-alike rooms (sim_dataset.generate_contrast or generate_close), generated once."""
    if (directory / sim_dataset.EXAMPLES_FILE).is_file():
        log(f"{what}: reusing {directory}")
        return directory
    start = time.perf_counter()
    examples = generate(directory, layout_seeds)
    log(f"{what}: {len(examples)} from {len(layout_seeds)} rooms in {time.perf_counter() - start:.0f} s")
    return directory


def contrast_views(work: Path, seed: int, rooms: list[int], close_views: bool, log: Log,
                   every_goal: bool = False) -> tuple[list, list]:
    """The contrast stage's views of `rooms` (generated once under `work`): the contrast views, and
    the close views where the stage takes them (else an empty list); with `every_goal`, each view
    under every object's instruction (sim_dataset.generate_contrast)."""
    tag = "-all" if every_goal else ""
    contrast, _ = read_dataset(make_views(work / f"contrast{tag}-s{seed}", rooms,
                                          partial(sim_dataset.generate_contrast, every_goal=every_goal),
                                          "contrast views", log))
    if not close_views:
        return contrast, []
    close, _ = read_dataset(make_views(work / f"close{tag}-s{seed}", rooms,
                                       partial(sim_dataset.generate_close, every_goal=every_goal), "close views", log))
    return contrast, close


def contrast_rooms(seed: int, budget: Budget) -> list[int]:
    """The contrast views' layout seeds: the training stream after the expert's and DAgger's rooms."""
    first = budget.episodes + budget.dagger_episodes
    return [sim_dataset.episode_seed(seed, first + i) for i in range(budget.contrast_rooms)]


def train_family(out: Path, work: Path, seed: int, budget: Budget = Budget(), dataset_dir: Path | None = None,
                 log: Log = print, placement: Placement = CPU_FP32, resume: Path | None = None) -> FamilyReport:
    """Train on `placement`'s device, forward passes in its precision (`autocast`, weights float32);
    the saved models are then evaluated on the CPU in float32, as their cards have always been.

    The target learns in three stages: the expert's views, one DAgger round, then the contrast views
    (look-alike rooms). The draft is then cut from the trained target (its first layers and its last,
    the vision tower, embeddings and head: layer_draft.cut_draft), so it starts from what the target
    sees, and is distilled toward it on the contrast stage's views. `resume`: a models directory whose
    target went through the first two stages with this seed and budget (its card.json says so);
    training starts at the contrast stage from it."""
    if budget.contrast_repeat < 1:
        raise ValueError(f"contrast_repeat must be >= 1, got {budget.contrast_repeat}")
    torch.manual_seed(seed)
    random.seed(seed)
    clock = time.perf_counter()
    data_dir = dataset_dir or make_dataset(work / f"dataset-s{seed}", budget.episodes, seed, log)
    examples, records = read_dataset(data_dir)
    train_layouts = {r["seed"] for r in records}
    held_dir = make_dataset(work / f"heldout-s{seed}", budget.heldout_episodes, seed + sim_eval.HELDOUT_STREAM, log)
    held, held_records = read_dataset(held_dir)
    overlap = train_layouts & {r["seed"] for r in held_records}
    if overlap:
        raise ValueError(f"held-out frames share rooms with the training data (layout seeds {sorted(overlap)[:5]})")

    tokenizer = family.family_tokenizer(task_words())
    held_rooms = {r["seed"] for r in held_records}
    expert_examples = len(examples)
    dagger_rooms = [sim_dataset.episode_seed(seed, budget.episodes + i) for i in range(budget.dagger_episodes)]
    if set(dagger_rooms) & held_rooms:
        raise ValueError("DAgger rooms overlap the held-out frames' rooms")
    train_layouts |= set(dagger_rooms)
    with autocast(placement):
        if resume is None:
            target = family.new_vlm(family.TARGET_SHAPE, tokenizer, seed)
            target.model.to(placement.device)
            data = EncodedExamples(target, examples)
            log(f"target: {family.parameter_count(target) / 1e6:.2f}M parameters, {len(data)} examples")
            target_stats = train(target, data, TrainConfig(steps=budget.target_steps, batch=budget.batch, lr=2.5e-3,
                                                           seed=seed), log=lambda s: log("target " + s))
            extra, dagger_stats = dagger.collect(sim_eval.model_planner(target), dagger_rooms,
                                                 timeout_s=budget.dagger_timeout_s, log=log)
            data = EncodedExamples(target, examples + extra)
            target_stats["dagger"] = {**dagger_stats, **train(
                target, data, TrainConfig(steps=budget.dagger_steps, batch=budget.batch, lr=1e-3, seed=seed + 2),
                log=lambda s: log("target (DAgger) " + s))}
        else:
            target, target_stats = resumed_target(resume, seed, budget, placement)
            log(f"target: resumed from {resume} after the DAgger stage")

        rooms = contrast_rooms(seed, budget)
        if set(rooms) & held_rooms:
            raise ValueError("contrast rooms overlap the held-out frames' rooms")
        train_layouts |= set(rooms)
        contrast, close = contrast_views(work, seed, rooms, budget.close_views, log, budget.every_goal)
        data = EncodedExamples(target, examples + (contrast + close) * budget.contrast_repeat)
        examples = examples + contrast + close
        target_stats["contrast"] = {"rooms": len(rooms), "examples": len(contrast),
                                    **({"close_examples": len(close)} if close else {}),
                                    **({"repeat": budget.contrast_repeat} if budget.contrast_repeat > 1 else {}),
                                    **({"every_goal": True} if budget.every_goal else {}), **train(
            target, data, TrainConfig(steps=budget.contrast_steps, batch=budget.batch, lr=1e-3, seed=seed + 3),
            log=lambda s: log("target (contrast) " + s))}

        draft = ModelBundle(cut_draft(target.model, budget.draft_keep), tokenizer, target.image_processor)
        log(f"draft: {family.parameter_count(draft) / 1e6:.2f}M parameters, the target's first {budget.draft_keep} "
            "layers and its last, distilled from its logits")
        draft_stats = {"keep": budget.draft_keep, **train(
            draft, data, TrainConfig(steps=budget.draft_steps, batch=budget.batch, lr=1e-3, seed=seed + 4,
                                     kd_weight=0.8, temperature=1.0),
            teacher=teacher_logits(target, data), log=lambda s: log("draft " + s))}

        heads, exits = train_exits(target, draft, examples, held, budget, seed, log)

    target_dir, draft_dir = out / "target", out / "draft"
    target.save(target_dir)
    draft.save(draft_dir)
    save_exits(heads, exits, target_dir)
    train_seconds = time.perf_counter() - clock

    figures = evaluate_family(target_dir, draft_dir, held, held_records, budget, seed, train_layouts, log)
    figures["training"] = {
        "seed": seed, "seconds": round(train_seconds), **({"resumed_from": str(resume)} if resume else {}),
        "examples": expert_examples, "episodes": len({
            r["episode"] for r in records}), "dataset": str(data_dir), "target": target_stats, "draft": draft_stats,
        "exits": exits["training"],
    }
    figures["shapes"] = {"target": family.TARGET_SHAPE.to_dict(),
                         "draft": replace(family.TARGET_SHAPE, layers=decoder_parts(draft.model).num_layers).to_dict(),
                         "image_size": family.IMAGE_SIZE, "vocabulary": len(tokenizer),
                         "target_parameters": family.parameter_count(target),
                         "draft_parameters": family.parameter_count(draft)}
    figures["exit_agreement"] = exits["agreement"]
    return FamilyReport(target_dir, draft_dir, figures)


def train_exits(target: ModelBundle, draft: ModelBundle, examples: list[Example], held: list[Example],
                budget: Budget, seed: int, log: Log) -> tuple[ExitHeads, dict]:
    """The target's exit heads, trained for round verdicts (modeling/exit_training.py) on its own
    answers to `budget.exit_prompts` training frames cut into the rounds `draft` drafts of them;
    their agreement (per token and per round) measured on the held-out frames."""
    layers = default_exit_layers(decoder_parts(target.model).num_layers)
    attend = layers[:budget.exit_attend]
    heads = ExitHeads(layers, target.hidden_size, rank=budget.exit_rank, attend=attend,
                      positions=attend_positions(target.max_positions))
    rng = random.Random(seed)
    chosen = rng.sample(examples, min(budget.exit_prompts, len(examples)))
    exit_train = teacher_data(target, [target.encode(e.instruction, e.image) for e in chosen], layers,
                              draft=draft, gamma=budget.exit_gamma, attend=attend)
    exit_held = teacher_data(target, [target.encode(e.instruction, e.image) for e in held], layers,
                             draft=draft, gamma=budget.exit_gamma, attend=attend)
    untrained, untrained_rounds = agreement(heads, target, exit_held), round_agreement(heads, target, exit_held)
    stats = train_exit_heads(heads, target, exit_train, steps=budget.exit_steps, lr=3e-3, seed=seed,
                             ce_weight=budget.exit_ce)
    trained, trained_rounds = agreement(heads, target, exit_held), round_agreement(heads, target, exit_held)
    log("exits: held-out agreement " + ", ".join(f"layer {k}: {untrained[k]:.1%} -> {trained[k]:.1%}" for k in layers)
        + "; round verdicts " + ", ".join(f"layer {k}: {untrained_rounds[k]:.1%} -> {trained_rounds[k]:.1%}"
                                          for k in layers))
    return heads, {
        "training": {**stats, "layers": layers, "attend": attend, "rank": heads.rank, "prompts": len(chosen),
                     "seed": seed,
                     "ce_weight": budget.exit_ce, "gamma": budget.exit_gamma},
        "agreement": {"untrained": _named(untrained), "trained": _named(trained),
                      "positions": int(exit_held.target.shape[0]), "rounds_untrained": _named(untrained_rounds),
                      "rounds_trained": _named(trained_rounds), "rounds": len(exit_held.rounds)},
    }


def _named(per_layer: dict[int, float]) -> dict[str, float]:
    return {str(k): v for k, v in per_layer.items()}   # JSON keys


def retrain_exits(models: Path, work: Path, seed: int, budget: Budget = Budget(), dataset_dir: Path | None = None,
                  log: Log = print, placement: Placement = CPU_FP32, command: str = "") -> dict:
    """Only the exit step of the recipe, on a saved pair (`models`/target, `models`/draft trained with
    `seed`): the same training frames (the expert's, and the contrast views where the target went
    through that stage) and held-out frames as the recipe, new heads saved beside the target, the
    exit and speculation figures of both cards measured again, the rest of the cards kept."""
    target_dir, draft_dir = models / "target", models / "draft"
    card = target_dir / "card.json"
    if not card.is_file():
        raise ValueError(f"{card} not found: nothing says how this pair was trained")
    figures = json.loads(card.read_text())
    trained = figures.get("training", {})
    if trained.get("seed") != seed:
        raise ValueError(f"{models} was trained with seed {trained.get('seed')}, not {seed}: its exits would "
                         "learn from other frames than the recipe's")
    torch.manual_seed(seed)
    examples, _ = read_dataset(dataset_dir or make_dataset(work / f"dataset-s{seed}", budget.episodes, seed, log))
    stage = trained.get("target", {}).get("contrast")
    if stage is not None:
        contrast, close = contrast_views(work, seed, contrast_rooms(seed, budget), "close_examples" in stage, log,
                                         stage.get("every_goal", False))
        examples = examples + contrast + close
    held, _ = read_dataset(make_dataset(work / f"heldout-s{seed}", budget.heldout_episodes,
                                        seed + sim_eval.HELDOUT_STREAM, log))
    with autocast(placement):
        target, draft = load_bundle(target_dir, placement), load_bundle(draft_dir, placement)
        heads, exits = train_exits(target, draft, examples, held, budget, seed, log)
    save_exits(heads, exits, target_dir)
    figures["training"]["exits"] = {**exits["training"], **({"command": command} if command else {})}
    figures["exit_agreement"] = exits["agreement"]
    figures["speculation"] = speculation(target_dir, draft_dir, held, budget, seed, log)
    return figures


def save_exits(heads: ExitHeads, exits: dict, target_dir: Path) -> None:
    a = exits["agreement"]
    heads.save(target_dir, agreement_untrained=a["untrained"], agreement=a["trained"],
               round_agreement=a["rounds_trained"], **exits["training"])


def resumed_target(directory: Path, seed: int, budget: Budget, placement: Placement) -> tuple[ModelBundle, dict]:
    """A saved target (`directory`/target) to continue at the contrast stage, and its earlier stages'
    statistics, after checking from the card that it went through them with this seed and budget
    (the shipped pair before the contrast stage existed did)."""
    card = directory / "target" / "card.json"
    if not card.is_file():
        raise ValueError(f"{card} not found: nothing says how this target was trained")
    training = json.loads(card.read_text()).get("training", {})
    stats = training.get("target", {})
    dagger_stats = stats.get("dagger", {})
    done = (training.get("seed"), training.get("episodes"), stats.get("steps"), dagger_stats.get("episodes"),
            dagger_stats.get("steps"))
    wanted = (seed, budget.episodes, budget.target_steps, budget.dagger_episodes, budget.dagger_steps)
    if done != wanted:
        raise ValueError(f"{directory} was trained with (seed, episodes, steps, DAgger rooms, DAgger steps)"
                         f" = {done}, not {wanted}: it cannot resume this recipe")
    if "contrast" in stats:
        raise ValueError(f"{directory} already went through the contrast stage: it cannot resume this recipe")
    target = load_bundle(directory / "target", placement)
    target.model.float()   # the weights train in float32 whatever the forward passes run in
    return target, stats


def speculation(target_dir: Path, draft_dir: Path, held: list[Example], budget: Budget, seed: int, log: Log,
                engine: TargetEngine | None = None, draft: ModelBundle | None = None) -> dict:
    """The saved pair speculating (spec-ee, γ 4) on `budget.spec_frames` of the held-out frames:
    acceptance, each exit's round verdicts, losslessness (training/spec_eval.py)."""
    engine = engine or TargetEngine.from_dir(target_dir)
    draft = draft or load_bundle(draft_dir)
    frames = random.Random(seed).sample(held, min(budget.spec_frames, len(held)))
    prompts = [draft.encode(e.instruction, e.image) for e in frames]
    s = spec_eval.speculate(draft, engine, prompts, gamma=4, max_new_tokens=40)
    log(f"speculation: acceptance {s['acceptance']:.1%}, {s['tokens_per_round']:.2f} tokens/round, "
        f"round verdicts {s['exit_verdict_agreement']}, lossless mismatches {s['lossless_mismatches']}")
    return s


def answer_quality(bundle: ModelBundle, held: list[Example]) -> dict:
    """Greedy answers on held-out frames: how many parse, match the expert, see the goal right."""
    answers = greedy_answers(bundle, EncodedExamples(bundle, held))
    parsed = exact = observed = 0
    for text, ex in zip(answers, held):
        try:
            parse_answer(text)
            parsed += 1
        except ActionError:
            pass
        exact += text == ex.answer
        observed += text.split(" . ")[0] == ex.answer.split(" . ")[0]
    n = len(held)
    return {"frames": n, "parse_rate": parsed / n, "exact_match": exact / n, "observation_match": observed / n,
            "examples": [{"expert": ex.answer, "model": text} for text, ex in list(zip(answers, held))[:6]]}


def evaluate_family(target_dir: Path, draft_dir: Path, held: list[Example], held_records: list[dict],
                    budget: Budget, seed: int, train_layouts: set[int], log: Log) -> dict:
    """Reload the saved pair (what users get) and measure it on held-out data only."""
    engine = TargetEngine.from_dir(target_dir)
    target, draft = engine.bundle, load_bundle(draft_dir)
    figures: dict = {"answers": {"target": answer_quality(target, held), "draft": answer_quality(draft, held)}}
    log(f"held-out frames: target parses {figures['answers']['target']['parse_rate']:.1%}, "
        f"matches the expert {figures['answers']['target']['exact_match']:.1%}")
    figures["speculation"] = speculation(target_dir, draft_dir, held, budget, seed, log, engine, draft)
    seeds = sim_eval.heldout_seeds(budget.sim_episodes, seed, exclude=train_layouts)   # what `sim eval` draws
    figures["sim"] = sim_eval.evaluate(seeds, {"expert": None, "target": sim_eval.model_planner(target),
                                               "draft": sim_eval.model_planner(draft)},
                                      timeout_s=budget.sim_timeout_s, log=log)
    same = f"--episodes {budget.sim_episodes} --seed {seed} --timeout {budget.sim_timeout_s:g}"
    figures["sim_commands"] = {"target": f"spec-edge-cloud sim eval --target {target_dir} {same}",
                               "draft": f"spec-edge-cloud sim eval --target {target_dir} --draft {draft_dir} {same}"}
    return figures
