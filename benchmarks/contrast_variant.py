"""A variant of the VLM recipe's contrast stage, resumed from a pair that went through the stages before it.

docs/models.md measured these, each resumed from the pair of commit 952a44a (`git archive 952a44a
models/target models/draft | tar -x -C /tmp/base`). The recipe's defaults (close views, every goal,
2400 / 2000 steps) made the shipped pair; the earlier variants of "What still fails" had one
instruction per view:

    .venv/bin/python benchmarks/contrast_variant.py --resume /tmp/base/models --out /tmp/shipped --work runs/train
    .venv/bin/python benchmarks/contrast_variant.py ... --no-every-goal --steps 600 --draft-steps 400

It runs `spec-edge-cloud train --only vlm --resume` with the budget changed (the same data, rooms
and held-out evaluation: the cards' figures are `sim eval --episodes 100 --seed 0`'s) and writes
the pair with its cards under --out. One torch thread: on two shared cores, two are slower.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from spec_edge_cloud.training import cards
from spec_edge_cloud.training.vlm_family import Budget, train_family


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resume", type=Path, required=True, help="a models directory from before the contrast stage")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("runs/train"), help="data directories, reused when present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--close-views", action=argparse.BooleanOptionalAction, default=Budget.close_views,
                   help="add sim_dataset.generate_close's views")
    p.add_argument("--repeat", type=int, default=Budget.contrast_repeat,
                   help="times the look-alike views count beside the expert's in the stage")
    p.add_argument("--every-goal", action=argparse.BooleanOptionalAction, default=Budget.every_goal,
                   help="each look-alike view also under the instruction to go to each other object of its room")
    p.add_argument("--steps", type=int, default=Budget.contrast_steps, help="target steps of the stage")
    p.add_argument("--draft-steps", type=int, default=Budget.draft_steps)
    p.add_argument("--episodes", type=int, default=Budget.sim_episodes, help="held-out rooms of the figures")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

    budget = replace(Budget(), close_views=args.close_views, contrast_repeat=args.repeat, every_goal=args.every_goal,
                     contrast_steps=args.steps, draft_steps=args.draft_steps, sim_episodes=args.episodes)
    report = train_family(args.out, args.work, args.seed, budget, log=log, resume=args.resume)
    cards.vlm_cards(report.target_dir, report.draft_dir, report.figures,
                    f"python benchmarks/contrast_variant.py --resume {args.resume} --out {args.out} --seed {args.seed}"
                    f"{' --close-views' if args.close_views else ' --no-close-views'}"
                    f"{' --every-goal' if args.every_goal else ' --no-every-goal'} --repeat {args.repeat}"
                    f" --steps {args.steps} --draft-steps {args.draft_steps} --episodes {args.episodes}")
    log(f"variant saved under {args.out}")


if __name__ == "__main__":
    main()
