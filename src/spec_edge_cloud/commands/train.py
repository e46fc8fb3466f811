"""`spec-edge-cloud train`: reproduce the shipped models and their cards.

    spec-edge-cloud train --out models/ --seed S            # VLM pair + SmolLM2 exits and draft
    spec-edge-cloud train --only vlm --dataset DIR          # reuse a `sim dataset` directory
    spec-edge-cloud train --only vlm --resume OLD_MODELS    # from the contrast stage on (same --seed)
    spec-edge-cloud train --only exits --out models --seed S  # the target's exit heads only (round verdicts)
    spec-edge-cloud train --only text                       # SmolLM2 parts only
    spec-edge-cloud train --quick --out /tmp/m              # a few steps of everything (smoke test)
    spec-edge-cloud train --device cuda --dtype bfloat16    # on a GPU, forward passes in bfloat16

Training runs on --device with its forward passes in --dtype (mixed precision: the weights and the
optimiser stay float32, as the models are saved); the figures of the cards are then measured on the
CPU in float32 whatever trained them.

Exit heads for a target of your own: `spec-edge-cloud exits train --target DIR --prompts FILE`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..modeling.placement import add_placement_arguments, placement_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("models"), help="where the model directories go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["vlm", "text", "exits"], default=None,
                   help="train one family only; exits: only the exit heads of the VLM target in --out (the "
                        "recipe's exit step on a saved pair, e.g. after retraining the target)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="an existing `sim dataset` directory (default: generated under --work from --seed)")
    p.add_argument("--work", type=Path, default=Path("runs/train"),
                   help="scratch space: generated datasets, the SmolLM2 target's answers")
    p.add_argument("--quick", action="store_true", help="tiny budget: checks the pipeline, not the models")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", type=Path, default=None,
                   help="a models directory whose target went through the stages before the contrast "
                        "stage with this --seed: train from there on (VLM only)")
    add_placement_arguments(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..training import cards
    from ..training.text_pair import DRAFT_DIR, EXITS_DIR, TextBudget, train_text_pair
    from ..training.vlm_family import Budget, retrain_exits, train_family

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {text}", flush=True)

    command = " ".join(["spec-edge-cloud train", f"--out {args.out}", f"--seed {args.seed}"]
                       + ([f"--only {args.only}"] if args.only else []) + (["--quick"] if args.quick else [])
                       + ([f"--resume {args.resume}"] if args.resume else []))
    try:
        placement = placement_from_args(args)
        args.out.mkdir(parents=True, exist_ok=True)
        if args.only == "exits":
            budget = Budget.quick() if args.quick else Budget()
            figures = retrain_exits(args.out, args.work, args.seed, budget, args.dataset, log, placement, command)
            cards.vlm_cards(args.out / "target", args.out / "draft", figures, cards.recipe_command(figures, args.out))
            log(f"exit heads saved: {args.out / 'target'}")
        if args.only in (None, "vlm"):
            budget = Budget.quick() if args.quick else Budget()
            report = train_family(args.out, args.work, args.seed, budget, args.dataset, log, placement,
                                  resume=args.resume)
            cards.vlm_cards(report.target_dir, report.draft_dir, report.figures, command)
            log(f"VLM pair saved: {report.target_dir}, {report.draft_dir}")
        if args.only in (None, "text"):
            budget = TextBudget.quick() if args.quick else TextBudget()
            figures = train_text_pair(args.out, args.seed, budget, log, placement, work=args.work)
            cards.text_cards(args.out / EXITS_DIR, args.out / DRAFT_DIR, figures, command)
            log(f"SmolLM2 exits and draft saved: {args.out / EXITS_DIR}, {args.out / DRAFT_DIR}")
    except (ValueError, FileNotFoundError) as exc:  # ModelDirError is a FileNotFoundError
        print(f"spec-edge-cloud train: error: {exc}", file=sys.stderr)
        return 2
    return 0
