"""What limits the SmolLM2 exits' held-out agreement: the number of training subjects.

The held-out prompts (training/prompts.py) ask about subjects no training prompt mentions. This
script trains one exit adapter on the answers to the first N training prompts (8 prompts per
subject) and prints its agreement with the final layer on those answers and on the held-out ones,
every 100 steps. Two phases, so the slow part (the target's own answers) runs once:

    .venv/bin/python benchmarks/exit_subjects.py data --prompts 40 --out /tmp/exit_subjects
    .venv/bin/python benchmarks/exit_subjects.py train --prompts 16 --out /tmp/exit_subjects \\
        --layer 15 --steps 300 --batch 32

    .venv/bin/python benchmarks/exit_subjects.py shipped --prompts 40 --out /tmp/exit_subjects \
        --exits models/smollm2-exits

`shipped` measures trained heads (all their layers) on the same two sets: the heads shipped before
2026-12-07 were trained on the first 160 prompts, so the first 40 were answers they saw (the
current ones learn from answers to broad prompts, training/text_pair.py).
`train --prompts N` uses the first N prompts of the `data` run (N at most its --prompts). Teacher
data is stored in float16 (about 100 KB per answer position); the shipped heads' own figures come
from `spec-edge-cloud train --only text` and `spec-edge-cloud exits report`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spec_edge_cloud.modeling import smollm2
from spec_edge_cloud.modeling.bundle import load_bundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.layers import decoder_parts
from spec_edge_cloud.modeling.text_teacher import own_answers, teacher_batch
from spec_edge_cloud.training.prompts import STYLES, instruction_prompts
from spec_edge_cloud.training.text_pair import TextBudget

EXIT_LAYERS = [8, 15, 22]


def make_data(target, n_train: int, out: Path) -> None:
    """The target's greedy answers, teacher-forced: exit-layer states and final logits, per split."""
    budget = TextBudget()
    splits = {"held": instruction_prompts("heldout")[: budget.heldout_prompts],
              "train": instruction_prompts("train")[:n_train]}
    out.mkdir(parents=True, exist_ok=True)
    for name, texts in splits.items():
        start = time.perf_counter()
        answers = own_answers(target, [target.encode(t) for t in texts], budget.max_new_tokens)
        teach = teacher_batch(target, answers, EXIT_LAYERS)
        torch.save({"hidden": {k: v.half() for k, v in teach.hidden.items()}, "target": teach.target.half(),
                    "answer_lengths": answers.answer_lengths()}, out / f"{name}.pt")
        print(f"{name}: {len(texts)} prompts, {teach.target.shape[0]} positions "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


def agreement(heads: ExitHeads, layer: int, parts, data: dict, rows: torch.Tensor | None = None) -> float:
    hidden, final = data["hidden"][layer], data["target"]
    if rows is not None:
        hidden, final = hidden[rows], final[rows]
    with torch.no_grad():
        return float((heads.logits(layer, hidden.float(), parts).argmax(-1) == final.float().argmax(-1)).float().mean())


def shipped(target, args: argparse.Namespace) -> None:
    """Trained heads' agreement on the data run's training answers and on the held-out ones."""
    parts = decoder_parts(target.model)
    heads = ExitHeads.load(args.exits)
    data, held = torch.load(args.out / "train.pt"), torch.load(args.out / "held.pt")
    rows = torch.arange(sum(data["answer_lengths"][: args.prompts]))
    for k in heads.layers:
        print(f"{args.exits} layer {k}: agreement on the first {args.prompts} training prompts' answers "
              f"({len(rows)} positions) {agreement(heads, k, parts, data, rows):.1%}, held-out "
              f"({held['target'].shape[0]} positions) {agreement(heads, k, parts, held):.1%}", flush=True)


def train(target, args: argparse.Namespace) -> None:
    """The recipe of modeling/exit_training.py (AdamW, KL to the final layer) on one exit, watched as it goes."""
    parts = decoder_parts(target.model)
    for p in target.model.parameters():
        p.requires_grad_(False)
    data, held = torch.load(args.out / "train.pt"), torch.load(args.out / "held.pt")
    lengths = data["answer_lengths"]
    if args.prompts > len(lengths):
        raise SystemExit(f"--prompts {args.prompts}: the data run holds only {len(lengths)} prompts")
    n = sum(lengths[: args.prompts])  # rows are in prompt order
    heads = ExitHeads([args.layer], target.hidden_size, args.rank)
    seen = torch.randint(0, n, (1500,), generator=torch.Generator().manual_seed(1))
    print(f"{args.prompts} prompts ({args.prompts / len(STYLES):g} subjects), {n} positions; "
          f"layer {args.layer} untrained: held-out {agreement(heads, args.layer, parts, held):.1%}", flush=True)
    opt = torch.optim.AdamW(heads.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (min(args.batch, n),), generator=g)
        teacher = F.softmax(data["target"][idx].float(), -1)
        student = F.log_softmax(heads.logits(args.layer, data["hidden"][args.layer][idx].float(), parts), -1)
        loss = F.kl_div(student, teacher, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step} ({time.perf_counter() - start:.0f} s) KL {loss.item():.3f}: agreement on training "
                  f"answers {agreement(heads, args.layer, parts, data, seen):.1%}, held-out "
                  f"{agreement(heads, args.layer, parts, held):.1%}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["data", "train", "shipped"])
    p.add_argument("--prompts", type=int, required=True, help="training prompts (8 per subject)")
    p.add_argument("--out", type=Path, required=True, help="where the teacher data goes")
    p.add_argument("--exits", type=Path, default=Path("models/smollm2-exits"), help="heads for `shipped`")
    p.add_argument("--layer", type=int, default=15, choices=EXIT_LAYERS)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    target = load_bundle(smollm2.target_dir())
    if args.phase == "data":
        make_data(target, args.prompts, args.out)
    elif args.phase == "shipped":
        shipped(target, args)
    else:
        train(target, args)


if __name__ == "__main__":
    main()
