"""Tiny real model pairs for decoding tests: a target and a draft that agrees with it only partly."""
from __future__ import annotations

import copy
import json

import numpy as np
import torch
from transformers import StaticCache

from spec_edge_cloud.modeling.bundle import ModelBundle, Prompt
from spec_edge_cloud.modeling.tiny import tiny_bundle


def perturbed(bundle: ModelBundle, noise: float, seed: int) -> ModelBundle:
    """A draft made from the target plus noise: same vocabulary, partial agreement."""
    model = copy.deepcopy(bundle.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std().clamp(min=1e-3))
    return ModelBundle(model, bundle.tokenizer, bundle.image_processor)


def pair(kind: str, seed: int, vocab: int = 60, noise: float = 0.3, layers: int = 4):
    target = tiny_bundle(kind, vocab=vocab, seed=seed, layers=layers)
    return target, perturbed(target, noise, seed + 100)


def random_image(seed: int, size: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def target_alone(bundle: ModelBundle, prompt: Prompt, max_new_tokens: int) -> list[int]:
    """The reference: Hugging Face's own greedy generate() on the target, one token at a time."""
    ids = torch.tensor([prompt.input_ids])
    kw = {}
    if prompt.vision:
        kw = dict(prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int())
    with torch.no_grad():
        out = bundle.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=sorted(bundle.eos_ids), pad_token_id=0, **kw)
    return out[0, ids.shape[1]:].tolist()


def static_reference(bundle, prompt, max_new, kv_len):
    """The target alone: Hugging Face's greedy generate() over a StaticCache of the slots' length."""
    ids = torch.tensor([prompt.input_ids])
    kw = dict(prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int()) if prompt.vision else {}
    with torch.no_grad():
        out = bundle.model.generate(ids, max_new_tokens=max_new, do_sample=False, eos_token_id=sorted(bundle.eos_ids),
                                    pad_token_id=0, cache=StaticCache(config=bundle.model.config, max_cache_len=kv_len),
                                    **kw)
    return out[0, ids.shape[1]:].tolist()


def profile_file(tmp_path, layers=8, pass_ms=60.0, draft_ms=3.0):
    """A timing profile of a slow target (`pass_ms` a pass, whatever its length), where speculation pays."""
    cum = [pass_ms * (i + 1) / layers for i in range(layers)]
    path = tmp_path / "slow.json"
    path.write_text(json.dumps({"name": "slow-target-test", "draft": {"per_token_ms": draft_ms},
                                "target": {"cum_layer_ms": {"1": cum, "5": cum}}}))
    return path
