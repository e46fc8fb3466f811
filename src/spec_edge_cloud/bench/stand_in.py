"""A tiny stand-in draft/target pair, written as model directories, for benchmarks before real models exist.

The benchmarks measure the pipeline (protocol, link, timing), so until `models/target` and
`models/draft` are trained they run on this pair: a random 4-layer Qwen2-VL over the project's own
words (sim vocabulary + action words), a draft made from it by perturbing every weight (so it agrees
only partly, like a smaller model), and an untrained exit head at 3/4 depth (final norm + lm_head
on that layer's state). Self-distilling that exit on a random model does not generalise beyond its
training prompts (tried at layer 2: 0.94 agreement on them, 0.2 to 0.27 on others), so it stays untrained and
agrees with the final layer only sometimes, as docs/design.md expects of untrained exits. Its answers
are not sensible sentences: time to first action stays empty with it. Written as ordinary model
directories, so the in-process link and the verifier server load it the same way as real models.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..control.actions import ACTION_WORDS
from ..modeling.bundle import ModelBundle
from ..modeling.exit_heads import ExitHeads
from ..modeling.tiny import image_processor, tiny_qwen2vl
from ..modeling.tokenizer import build_word_tokenizer
from ..sim.vocab import INSTRUCTION_WORDS, OBSERVATION_WORDS

LAYERS, HIDDEN, EXIT_LAYER = 4, 64, 3


def project_words() -> list[str]:
    return list(dict.fromkeys(INSTRUCTION_WORDS + OBSERVATION_WORDS + ACTION_WORDS))


def _perturbed(model: torch.nn.Module, noise: float, seed: int) -> torch.nn.Module:
    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std().clamp(min=1e-3))
    return draft


def write_stand_in(directory: str | Path, seed: int = 0, noise: float = 0.15,
                   image_size: int = 112) -> tuple[Path, Path]:
    """Write DIR/target (with exit heads) and DIR/draft; returns (draft_dir, target_dir)."""
    directory = Path(directory)
    tok = build_word_tokenizer(project_words())
    target = ModelBundle(tiny_qwen2vl(tok, layers=LAYERS, hidden=HIDDEN, seed=seed), tok, image_processor(image_size))
    draft = ModelBundle(_perturbed(target.model, noise, seed + 1), tok, image_processor(image_size))
    target.save(directory / "target")
    ExitHeads([EXIT_LAYER], target.hidden_size, rank=16).save(directory / "target", stand_in=True)
    draft.save(directory / "draft")
    return directory / "draft", directory / "target"


def stand_in_dirs(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """The pair under `directory`, written on first use."""
    directory = Path(directory)
    if not (directory / "target" / "exit_heads.json").is_file() or not (directory / "draft" / "config.json").is_file():
        return write_stand_in(directory, seed)
    return directory / "draft", directory / "target"
