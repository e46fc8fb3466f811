"""The real-weights text pair: SmolLM2-135M-Instruct as target, its exit heads, and a draft cut from it.

Both the exits and the draft learn from the target's own sampled answers to broad prompts about
thousands of words (training/prompts.py `broad_prompts`), labelled by its final layer at every
position (teacher forcing: any text will do, and varied text is what makes exits generalise; the
answers to a few templated subjects did not). Every figure is measured as before, on the target's
greedy answers to the held-out prompts, whose subjects no training prompt mentions. Only small
trained parts go to `models/`: the exit adapters and the draft's one trained layer. The target itself and the full draft directory live in the cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.modeling import smollm2
from spec_edge_cloud.modeling.bundle import ModelBundle, load_bundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads, default_exit_layers, load_or_init_exit_heads
from spec_edge_cloud.modeling.exit_training import TeacherBatch, agreement, train_exit_heads
from spec_edge_cloud.modeling.layer_draft import cut_draft, save_trained_layer, train_layer_draft
from spec_edge_cloud.modeling.layers import decoder_parts
from spec_edge_cloud.modeling.placement import CPU_FP32, Placement, autocast
from spec_edge_cloud.modeling.text_teacher import AnswerSet, own_answers, sampled_answers, teacher_batch
from spec_edge_cloud.training import spec_eval
from spec_edge_cloud.training.prompts import STYLES, broad_prompts, instruction_prompts

Log = Callable[[str], None]
EXITS_DIR, DRAFT_DIR = "smollm2-exits", "smollm2-draft"
SEEN_ROWS = 2048  # training positions the exits' fit is measured on


@dataclass(frozen=True)
class TextBudget:
    sampled_prompts: int = 512    # answers sampled at `temperature` to prompts in every style
    greedy_prompts: int = 512     # greedy answers to prompts in the held-out prompts' styles, other words
    broad_tokens: int = 48
    broad_batch: int = 64
    temperature: float = 0.8
    heldout_prompts: int = 24
    max_new_tokens: int = 48       # of the held-out (greedy) answers the figures are measured on
    exit_steps: int = 600
    draft_keep: int = 8            # the draft: the target's first 8 layers + 1 trained layer
    draft_steps: int = 400
    spec_prompts: int = 12
    # a draft that agrees with the target on about 4 tokens in 10 wastes most of a fixed-length round:
    # stopped at its first token below this probability, it drafts half as many for as many accepted
    draft_min_confidence: float = 0.2

    @classmethod
    def quick(cls) -> "TextBudget":
        return cls(sampled_prompts=2, greedy_prompts=2, broad_tokens=6, heldout_prompts=2, max_new_tokens=6, exit_steps=2, draft_steps=2,
                   spec_prompts=1)


def pair_dirs(models: Path) -> tuple[Path, Path, Path]:
    """(draft, target, exits) directories of the SmolLM2 pair, materialising the cached parts."""
    from spec_edge_cloud.modeling.layer_draft import build_draft_dir
    target = smollm2.target_dir()
    draft = build_draft_dir(target, models / DRAFT_DIR, smollm2.cache_root() / "smollm2" / "draft")
    return draft, target, models / EXITS_DIR


def vocabulary_words(tokenizer) -> list[str]:
    """Whole lower-case words of at least 5 letters in a byte-level BPE vocabulary (tokens with a
    leading space, 'Ġ'): the subjects of the broad prompts, found offline in the model's own files."""
    return sorted(w[1:] for w in tokenizer.get_vocab() if w.startswith("Ġ") and len(w) > 5
                  and w[1:].isalpha() and w[1:].islower())


def broad_teacher(target: ModelBundle, layers: list[int], budget: TextBudget, seed: int, work: Path | None,
                  log: Log) -> tuple[AnswerSet, TeacherBatch]:
    """The target's answers to broad prompts with their teacher data: sampled answers to prompts in
    every style, then greedy answers to prompts in the held-out prompts' styles (about other words)."""
    words = vocabulary_words(target.tokenizer)
    parts = [_answers(target, layers, broad_prompts(words, budget.sampled_prompts, seed), "sampled",
                      budget.temperature, budget, seed, work, log),
             _answers(target, layers, broad_prompts(words, budget.greedy_prompts, seed + 1, STYLES), "styles",
                      0.0, budget, seed, work, log)]
    answers = AnswerSet([s for a, _ in parts for s in a.sequences], [n for a, _ in parts for n in a.prompt_lens])
    return answers, TeacherBatch({k: torch.cat([t.hidden[k] for _, t in parts]) for k in layers},
                                 torch.cat([t.target for _, t in parts]), normed=True)


def _answers(target: ModelBundle, layers: list[int], texts: list[str], kind: str, temperature: float,
             budget: TextBudget, seed: int, work: Path | None, log: Log) -> tuple[AnswerSet, TeacherBatch]:
    """One set of answers, cached under `work` (the slow part of the recipe: a re-run with other
    training settings reuses it)."""
    name = f"smollm2-{kind}-s{seed}-n{len(texts)}-t{budget.broad_tokens}-T{temperature:g}.pt"
    if work is not None and (work / name).is_file():
        saved = torch.load(work / name)
        log(f"smollm2: {kind} answers from {work / name}")
        return AnswerSet(saved["sequences"], saved["prompt_lens"]), TeacherBatch(saved["hidden"], saved["target"],
                                                                                normed=True)
    start = time.perf_counter()
    answers, teach = sampled_answers(target, [target.encode(p) for p in texts], budget.broad_tokens, layers,
                                     temperature, batch_size=budget.broad_batch, seed=seed,
                                     log=lambda s: log(f"smollm2 {kind}: {s}"))
    teach = TeacherBatch({k: v.cpu() for k, v in teach.hidden.items()}, teach.target.cpu(), normed=True)
    log(f"smollm2: {teach.positions} positions of {kind} answers to {len(texts)} prompts "
        f"({time.perf_counter() - start:.0f} s)")
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        torch.save({"sequences": answers.sequences, "prompt_lens": answers.prompt_lens, "hidden": teach.hidden,
                    "target": teach.target}, work / name)
    return answers, teach


def train_text_pair(models: Path, seed: int, budget: TextBudget = TextBudget(), log: Log = print,
                    placement: Placement = CPU_FP32, work: Path | None = None) -> dict:
    """Train on `placement`'s device, forward passes in its precision (`autocast`); the figures after
    training are measured on the CPU in float32, as the cards have always been."""
    torch.manual_seed(seed)
    clock = time.perf_counter()
    target = load_bundle(smollm2.target_dir(), Placement(placement.device, "float32"))
    parts = decoder_parts(target.model)
    layers = default_exit_layers(parts.num_layers)
    held_prompts = [target.encode(p) for p in instruction_prompts("heldout")[: budget.heldout_prompts]]

    with autocast(placement):
        answers, teach = broad_teacher(target, layers, budget, seed, work, log)
        held_answers = own_answers(target, held_prompts, budget.max_new_tokens)
        held_teach = teacher_batch(target, held_answers, layers)

        heads = ExitHeads(layers, target.hidden_size, rank=64)
        untrained = agreement(heads, target, held_teach)
        exit_stats = train_exit_heads(heads, target, teach, steps=budget.exit_steps, lr=3e-3, batch=128, seed=seed)
        trained = agreement(heads, target, held_teach)
        seen = agreement(heads, target, teach.first(SEEN_ROWS))  # beside held-out: the gap is overfitting
        log("smollm2 exits: held-out agreement " + ", ".join(
            f"layer {k}: {untrained[k]:.1%} -> {trained[k]:.1%} (training answers {seen[k]:.1%})" for k in layers))
        heads.save(models / EXITS_DIR, agreement_untrained={str(k): v for k, v in untrained.items()},
                   agreement={str(k): v for k, v in trained.items()},
                   agreement_training_answers={str(k): v for k, v in seen.items()}, **exit_stats)

        draft = ModelBundle(cut_draft(target.model, budget.draft_keep), target.tokenizer)
        draft_stats = train_layer_draft(draft, answers, teach, steps=budget.draft_steps, lr=6e-4, batch=4, seed=seed,
                                        log=lambda s: log("smollm2 " + s))
        save_trained_layer(draft.model, models / DRAFT_DIR, target=smollm2.GGUF_FILE, **draft_stats)
    positions = teach.positions
    del teach
    train_seconds = time.perf_counter() - clock

    draft_dir, target_dir, exits_dir = pair_dirs(models)
    engine = TargetEngine(load_bundle(target_dir), load_or_init_exit_heads(exits_dir, parts, target.hidden_size))
    draft_bundle = load_bundle(draft_dir)
    spec, stopped = (spec_eval.speculate(draft_bundle, engine, held_prompts[: budget.spec_prompts], gamma=4,
                                         max_new_tokens=budget.max_new_tokens, draft_min_confidence=c)
                     for c in (0.0, budget.draft_min_confidence))
    for s in (spec, stopped):
        log(f"smollm2 speculation (draft stops below {s['draft_min_confidence']:g}): acceptance {s['acceptance']:.1%}, "
            f"{s['tokens_per_round']:.2f} tokens/round, {s['drafted']} drafted, "
            f"lossless mismatches {s['lossless_mismatches']}")
    return {
        "target": {"name": "SmolLM2-135M-Instruct", "source": smollm2.GGUF_FILE, "layers": parts.num_layers,
                   "parameters": sum(p.numel() for p in target.model.parameters())},
        "draft": {"keep": budget.draft_keep, "layers": budget.draft_keep + 1, **draft_stats,
                  "parameters": sum(p.numel() for p in draft.model.parameters()),
                  "trained_parameters": sum(p.numel() for p in decoder_parts(draft.model).layers[-1].parameters())},
        "exits": {**exit_stats, "layers": layers, "rank": heads.rank,
                  "agreement_untrained": {str(k): v for k, v in untrained.items()},
                  "agreement": {str(k): v for k, v in trained.items()},
                  "agreement_training_answers": {str(k): v for k, v in seen.items()},
                  "training_rows": min(SEEN_ROWS, positions), "heldout_positions": int(held_teach.target.shape[0])},
        "prompts": {"sampled": budget.sampled_prompts, "greedy": budget.greedy_prompts,
                    "broad_tokens": budget.broad_tokens,
                    "temperature": budget.temperature, "positions": positions, "heldout": len(held_prompts),
                    "max_new_tokens": budget.max_new_tokens},
        "speculation": spec,
        "speculation_stopped": stopped,
        "training": {"seed": seed, "seconds": round(train_seconds)},
    }
