"""Weight-only quantization of the draft (torchao): what lets a 2B draft fit a Jetson's memory and
bandwidth. Only the draft is quantized: the target's logits decide what is committed, and a
quantized draft can only change how many of its guesses are accepted, never the output.

int8: per-channel int8 weights (torchao Int8WeightOnlyConfig), on any device. int4: groups of 32
(CPU: IntxWeightOnlyConfig, int4 values held unpacked in int8, so it shows int4's accuracy, not its
memory; CUDA: Int4WeightOnlyConfig, tile-packed for its int4 kernels; not run here, no GPU).
"""
from __future__ import annotations

import logging

import torch

QUANTIZATIONS = ("none", "int8", "int4")


def quantize_weights(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Quantize every linear layer's weights in place (`none` leaves the model as it is)."""
    if mode not in QUANTIZATIONS:
        raise ValueError(f"--quantize {mode!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if mode == "none":
        return model
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it reports every CUDA kernel library it lacks
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    cuda = next(model.parameters()).device.type == "cuda"
    if mode == "int8":
        config = Int8WeightOnlyConfig()
    elif cuda:
        config = Int4WeightOnlyConfig(group_size=32, int4_packing_format="tile_packed_to_4d")
    else:
        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))
    # int4 groups of 32 need input widths that divide: narrower layers (a tiny vision tower) stay as they are
    quantize_(model, config, filter_fn=lambda m, _: isinstance(m, torch.nn.Linear)
              and (mode == "int8" or m.in_features % 32 == 0))
    return model
