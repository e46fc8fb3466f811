"""`bench quantize`: the acceptance a draft loses to weight-only quantization, on real prompts.

Each quantization of the draft speculates against the same target over the same prompts (the
frames of a bag: image + instruction for a VLM pair, the instruction alone for a text pair), in
`spec-ee` mode through the real decoding core, every response checked token for token against the
target alone (a quantized draft changes acceptance, never the output).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..bench.bags import read_frames
from ..decoding.target import TargetEngine
from ..modeling.bundle import check_same_tokenizer, load_bundle
from ..modeling.placement import Placement
from ..modeling.quantize import quantize_weights
from ..training.spec_eval import speculate


def quantization_acceptance(draft_dir: Path, target_dir: Path, exits_dir: Path | None, bag: Path, frames: int,
                            modes: list[str], placement: Placement, gamma: int = 4, max_new_tokens: int = 32,
                            log: Callable[[str], None] = print) -> dict:
    engine = TargetEngine.from_dir(target_dir, exits_dir, placement=placement)
    shots = read_frames(bag, frames)
    result = {"draft": str(draft_dir), "target": str(target_dir), "bag": str(bag), "frames": len(shots),
              "gamma": gamma, "max_new_tokens": max_new_tokens, "placement": str(placement), "modes": {}}
    for mode in modes:
        draft = load_bundle(draft_dir, placement)
        check_same_tokenizer(draft, engine.bundle)
        quantize_weights(draft.model, mode)
        prompts = [draft.encode(f.instruction, f.image if draft.is_vlm else None) for f in shots]
        s = speculate(draft, engine, prompts, gamma=gamma, max_new_tokens=max_new_tokens)
        result["modes"][mode] = {k: s[k] for k in ("acceptance", "tokens_per_round", "drafted", "accepted",
                                                   "lossless_mismatches")}
        log(f"  {mode:5s}: acceptance {s['acceptance']:.1%}, {s['tokens_per_round']:.2f} tokens/round, "
            f"lossless mismatches {s['lossless_mismatches']}")
    base = result["modes"].get("none", {}).get("acceptance")
    for figures in result["modes"].values():
        figures["acceptance_lost"] = None if base is None else round(base - figures["acceptance"], 4)
    return result
