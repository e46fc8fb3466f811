"""`spec-edge-cloud exits train|report`: self-distil exit heads for a target, or measure their agreement."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..modeling.placement import add_placement_arguments, placement_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["train", "report"])
    p.add_argument("--target", required=True, help="target model directory")
    p.add_argument("--prompts", required=True,
                   help="prompts: a .txt file (one per line) or .jsonl with 'text' or 'instruction' "
                        "and optional 'image' (path relative to the file)")
    p.add_argument("--exits", default=None, help="exit-head directory (default: the target directory)")
    p.add_argument("--layers", default=None, help="comma-separated exit layers (default: 1/4, 1/2, 3/4 depth)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--attend", default="", help="comma-separated exit layers that also attend over the sequence "
                   "(an attention layer with its own cache in front of the adapter; eager passes only)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of prompts kept for the report")
    p.add_argument("--seed", type=int, default=0)
    add_placement_arguments(p)


def read_prompts(path: Path, bundle) -> list:
    import cv2
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} not found")
    prompts = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            row = json.loads(line)
            image = None
            if row.get("image"):
                bgr = cv2.imread(str(path.parent / row["image"]))
                if bgr is None:
                    raise ValueError(f"cannot read image {row['image']} listed in {path}")
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            prompts.append(bundle.encode(row.get("text") or row["instruction"], image))
        else:
            prompts.append(bundle.encode(line.strip()))
    if len(prompts) < 2:
        raise ValueError(f"{path}: need at least 2 prompts (some are held out for the report)")
    return prompts


def run(args: argparse.Namespace) -> int:
    import torch

    from ..modeling.bundle import load_bundle
    from ..modeling.exit_heads import ExitHeads, attend_positions, default_exit_layers, load_or_init_exit_heads
    from ..modeling.exit_training import agreement, teacher_data, train_exit_heads
    from ..modeling.layers import decoder_parts

    try:
        torch.manual_seed(args.seed)
        placement = placement_from_args(args)
        bundle = load_bundle(args.target, placement)
        parts = decoder_parts(bundle.model)
        prompts = read_prompts(Path(args.prompts), bundle)
        n_held = max(1, int(len(prompts) * args.holdout))
        train_prompts, held_prompts = prompts[:-n_held], prompts[-n_held:]
        out_dir = Path(args.exits or args.target)
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
        if args.action == "report":
            heads = load_or_init_exit_heads(out_dir, parts, bundle.hidden_size, layers).to(bundle.device)
            held = teacher_data(bundle, held_prompts, heads.layers, args.max_new_tokens, attend=heads.attend)
            print(json.dumps({"trained": heads.trained, "agreement": agreement(heads, bundle, held)}))
            return 0
        layers = layers or default_exit_layers(parts.num_layers)
        attend = [int(x) for x in args.attend.split(",") if x.strip()]
        heads = ExitHeads(layers, bundle.hidden_size, args.rank, attend=attend,
                          positions=attend_positions(bundle.max_positions)).to(bundle.device)
        train = teacher_data(bundle, train_prompts, layers, args.max_new_tokens, attend=attend)
        held = teacher_data(bundle, held_prompts, layers, args.max_new_tokens, attend=attend)
        before = agreement(heads, bundle, held)
        stats = train_exit_heads(heads, bundle, train, steps=args.steps, lr=args.lr, seed=args.seed)
        after = agreement(heads, bundle, held)
        heads.save(out_dir, agreement_untrained={str(k): v for k, v in before.items()},
                   agreement={str(k): v for k, v in after.items()}, **stats)
    except (ValueError, FileNotFoundError) as exc:
        print(f"spec-edge-cloud exits: error: {exc}", file=sys.stderr)
        return 2
    print(f"exit heads saved to {out_dir} (layers {layers}, {stats['positions']} positions, "
          f"{stats['seconds']:.0f} s)")
    for k in layers:
        print(f"  layer {k}: held-out agreement {before[k]:.1%} untrained -> {after[k]:.1%} trained")
    return 0
