"""Find the parts of a Hugging Face decoder that early exits need: its layers, final norm and lm_head.

Llama-style LMs and VLMs (Qwen2-VL) nest them differently; `get_decoder()` hides the nesting, so the
engines work on any causal LM or VLM whose decoder exposes `.layers` and `.norm`.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class DecoderParts:
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    embed: nn.Module | None = None   # token embeddings and rotary embeddings: what a pass run layer by
    rotary: nn.Module | None = None  # layer (decoding/static_cache.py) feeds the first layer

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def decoder_parts(model: nn.Module) -> DecoderParts:
    decoder = model.get_decoder()
    layers, norm = getattr(decoder, "layers", None), getattr(decoder, "norm", None)
    lm_head = model.get_output_embeddings()
    if layers is None or norm is None or lm_head is None:
        raise TypeError(f"{type(model).__name__}: expected a decoder with .layers and .norm and an lm_head; "
                        "early exits need them")
    return DecoderParts(layers=layers, norm=norm, lm_head=lm_head, embed=getattr(decoder, "embed_tokens", None),
                        rotary=getattr(decoder, "rotary_emb", None))
