"""Early-exit heads: a small residual adapter per exit layer, in front of the frozen final norm and lm_head.

Why an adapter and not a copy of lm_head: a copy costs vocab x hidden parameters per exit (131M for a
7B Llama), an adapter a few hidden x rank matrices. The adapter's output projections start at zero,
so an untrained head is exactly "final norm + lm_head on the intermediate hidden state" (the classic
untrained exit); self-distillation (see `exit_training`) then teaches it the final layer's answer.

Heads are saved beside the model as `exit_heads.safetensors` + `exit_heads.json`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .bundle import model_file_errors
from .layers import DecoderParts

log = logging.getLogger(__name__)
WEIGHTS, META = "exit_heads.safetensors", "exit_heads.json"


class ExitAdapter(nn.Module):
    """h -> h + A h + U silu(D rmsnorm(h)); A and U start at zero (identity adapter)."""

    def __init__(self, hidden: int, rank: int):
        super().__init__()
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.linear = nn.Linear(hidden, hidden, bias=False)
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, hidden, bias=False)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.up.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(h) + self.up(nn.functional.silu(self.down(self.norm(h))))


class ExitHeads(nn.Module):
    """One adapter per exit layer (1-based index: the output of decoder layer `layer`)."""

    def __init__(self, layers: list[int], hidden: int, rank: int, trained: bool = False):
        super().__init__()
        if not layers:
            raise ValueError("at least one exit layer is needed")
        self.layers = sorted(set(int(x) for x in layers))
        self.rank = rank
        self.trained = trained
        self.adapters = nn.ModuleDict({str(k): ExitAdapter(hidden, rank) for k in self.layers})
        self.meta: dict = {}

    def logits(self, layer: int, hidden: torch.Tensor, parts: DecoderParts) -> torch.Tensor:
        adapter = self.adapters[str(layer)]
        out = adapter(hidden.to(adapter.linear.weight.dtype))  # float32 heads train on a bfloat16 model
        return parts.lm_head(parts.norm(out.to(parts.lm_head.weight.dtype)))

    def save(self, directory: str | Path, **meta) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS))
        self.meta.update(meta)
        (directory / META).write_text(json.dumps(
            {"layers": self.layers, "rank": self.rank, "trained": self.trained, **self.meta}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "ExitHeads":
        directory = Path(directory)
        meta = json.loads((directory / META).read_text())
        with model_file_errors(directory):
            state = load_file(str(directory / WEIGHTS))
        hidden = state[f"adapters.{meta['layers'][0]}.linear.weight"].shape[0]
        heads = cls(meta["layers"], hidden, meta["rank"], trained=meta.get("trained", True))
        heads.load_state_dict(state)
        heads.meta = {k: v for k, v in meta.items() if k not in ("layers", "rank", "trained")}
        return heads


def default_exit_layers(num_layers: int) -> list[int]:
    """Exits at about 1/4, 1/2 and 3/4 of the depth (deduplicated, never the last layer)."""
    return sorted({max(1, round(num_layers * f)) for f in (0.25, 0.5, 0.75)} - {num_layers}) or [1]


def load_or_init_exit_heads(directory: str | Path | None, parts: DecoderParts, hidden: int,
                            layers: list[int] | None = None, rank: int = 64) -> ExitHeads:
    """Trained heads from `directory` if present; otherwise untrained ones, with a warning, so every mode runs."""
    if directory is not None and (Path(directory) / META).exists():
        heads = ExitHeads.load(directory)
        if layers and set(layers) - set(heads.layers):
            raise ValueError(f"exit layers {sorted(set(layers) - set(heads.layers))} have no trained head in "
                             f"{directory} (trained: {heads.layers})")
        bad = [k for k in heads.layers if not 1 <= k <= parts.num_layers]
        if bad:
            raise ValueError(f"exit heads in {directory} name layers {bad} outside 1..{parts.num_layers}")
        return heads
    layers = layers or default_exit_layers(parts.num_layers)
    log.warning("no trained exit heads in %s: using untrained exits at layers %s (final norm + lm_head on the "
                "intermediate state; expect low agreement; train them with `spec-edge-cloud exits train`)",
                directory, layers)
    return ExitHeads(layers, hidden, rank, trained=False)
