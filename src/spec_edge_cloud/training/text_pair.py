"""The real-weights text pair: SmolLM2-135M-Instruct as target, its exit heads, and a draft cut from it.

Both the exits and the draft learn from the target's own greedy answers to the project's training
prompts (training/prompts.py); every figure is measured on the held-out prompts, whose subjects no
training prompt mentions. Only small trained parts go to `models/`: the exit adapters and the
draft's one trained layer. The target itself and the full draft directory live in the cache.
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
from spec_edge_cloud.modeling.exit_training import agreement, train_exit_heads
from spec_edge_cloud.modeling.layer_draft import cut_draft, save_trained_layer, train_layer_draft
from spec_edge_cloud.modeling.layers import decoder_parts
from spec_edge_cloud.modeling.placement import CPU_FP32, Placement, autocast
from spec_edge_cloud.modeling.text_teacher import own_answers, teacher_batch
from spec_edge_cloud.training import spec_eval
from spec_edge_cloud.training.prompts import instruction_prompts

Log = Callable[[str], None]
EXITS_DIR, DRAFT_DIR = "smollm2-exits", "smollm2-draft"


@dataclass(frozen=True)
class TextBudget:
    train_prompts: int = 160
    heldout_prompts: int = 24
    max_new_tokens: int = 48
    exit_steps: int = 600
    draft_keep: int = 8            # the draft: the target's first 8 layers + 1 trained layer
    draft_steps: int = 500
    spec_prompts: int = 12

    @classmethod
    def quick(cls) -> "TextBudget":
        return cls(train_prompts=2, heldout_prompts=2, max_new_tokens=6, exit_steps=2, draft_steps=2, spec_prompts=1)


def pair_dirs(models: Path) -> tuple[Path, Path, Path]:
    """(draft, target, exits) directories of the SmolLM2 pair, materialising the cached parts."""
    from spec_edge_cloud.modeling.layer_draft import build_draft_dir
    target = smollm2.target_dir()
    draft = build_draft_dir(target, models / DRAFT_DIR, smollm2.cache_root() / "smollm2" / "draft")
    return draft, target, models / EXITS_DIR


def train_text_pair(models: Path, seed: int, budget: TextBudget = TextBudget(), log: Log = print,
                    placement: Placement = CPU_FP32) -> dict:
    """Train on `placement`'s device, forward passes in its precision (`autocast`); the figures after
    training are measured on the CPU in float32, as the cards have always been."""
    torch.manual_seed(seed)
    clock = time.perf_counter()
    target = load_bundle(smollm2.target_dir(), Placement(placement.device, "float32"))
    parts = decoder_parts(target.model)
    layers = default_exit_layers(parts.num_layers)
    train_prompts = [target.encode(p) for p in instruction_prompts("train")[: budget.train_prompts]]
    held_prompts = [target.encode(p) for p in instruction_prompts("heldout")[: budget.heldout_prompts]]

    with autocast(placement):
        start = time.perf_counter()
        answers = own_answers(target, train_prompts, budget.max_new_tokens)
        held_answers = own_answers(target, held_prompts, budget.max_new_tokens)
        teach = teacher_batch(target, answers, layers)
        held_teach = teacher_batch(target, held_answers, layers)
        log(f"smollm2: {teach.target.shape[0]} answer positions from {len(train_prompts)} prompts "
            f"({time.perf_counter() - start:.0f} s)")

        heads = ExitHeads(layers, target.hidden_size, rank=64)
        untrained = agreement(heads, target, held_teach)
        exit_stats = train_exit_heads(heads, target, teach, steps=budget.exit_steps, lr=3e-3, batch=128, seed=seed)
        trained = agreement(heads, target, held_teach)
        seen = agreement(heads, target, teach)  # beside held-out: the gap is overfitting to the training subjects
        log("smollm2 exits: held-out agreement " + ", ".join(
            f"layer {k}: {untrained[k]:.1%} -> {trained[k]:.1%} (training answers {seen[k]:.1%})" for k in layers))
        heads.save(models / EXITS_DIR, agreement_untrained={str(k): v for k, v in untrained.items()},
                   agreement={str(k): v for k, v in trained.items()},
                   agreement_training_answers={str(k): v for k, v in seen.items()}, **exit_stats)

        draft = ModelBundle(cut_draft(target.model, budget.draft_keep), target.tokenizer)
        draft_stats = train_layer_draft(draft, answers, teach.target, steps=budget.draft_steps, lr=6e-4, batch=4, seed=seed,
                                        log=lambda s: log("smollm2 " + s))
        save_trained_layer(draft.model, models / DRAFT_DIR, target=smollm2.GGUF_FILE, **draft_stats)
    del teach
    train_seconds = time.perf_counter() - clock

    draft_dir, target_dir, exits_dir = pair_dirs(models)
    engine = TargetEngine(load_bundle(target_dir), load_or_init_exit_heads(exits_dir, parts, target.hidden_size))
    spec = spec_eval.speculate(load_bundle(draft_dir), engine, held_prompts[: budget.spec_prompts], gamma=4,
                               max_new_tokens=budget.max_new_tokens)
    log(f"smollm2 speculation: acceptance {spec['acceptance']:.1%}, {spec['tokens_per_round']:.2f} tokens/round, "
        f"lossless mismatches {spec['lossless_mismatches']}")
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
                  "heldout_positions": int(held_teach.target.shape[0])},
        "prompts": {"train": len(train_prompts), "heldout": len(held_prompts),
                    "max_new_tokens": budget.max_new_tokens},
        "speculation": spec,
        "training": {"seed": seed, "seconds": round(train_seconds)},
    }
