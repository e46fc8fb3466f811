"""Early-exit heads: a small residual adapter per exit layer, in front of the frozen final norm and lm_head.

Why an adapter and not a copy of lm_head: a copy costs vocab x hidden parameters per exit (131M for a
7B Llama), an adapter a few hidden x rank matrices. The adapter's output projections start at zero,
so an untrained head is exactly "final norm + lm_head on the intermediate hidden state" (the classic
untrained exit); self-distillation (see `exit_training`) then teaches it the final layer's answer.

An exit can also attend (`attend`): one causal self-attention layer over that layer's states of the
whole sequence so far, in front of its adapter. Why: an early layer's state at one position has not
yet gathered what the later layers read from the rest of the sequence (the image, the instruction,
the answer so far), and no per-position head can supply it: on the shipped target a second adapter
block or a wider rank left the first exit's round verdicts where they were, while this attention
lifted them (docs/models.md). It needs the exit's keys and values of every earlier position, kept
per sequence in an `ExitCache` written at each position a pass feeds, as the model's own cache is.

Heads are saved beside the model as `exit_heads.safetensors` + `exit_heads.json`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
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


class ExitAttention(nn.Module):
    """h -> h + O attn(Q y, K y, V y), y = rmsnorm(h) + position embedding; causal; O starts at zero.

    Positions are the tokens' indices in the sequence, learned: the backbone's own rotary positions
    (M-RoPE with an image) would tie the exit to one model family's position scheme."""

    def __init__(self, hidden: int, heads: int, positions: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"an attending exit needs the hidden size ({hidden}) divisible by its heads ({heads})")
        self.heads, self.positions = heads, positions
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.position = nn.Embedding(positions, hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.zeros_(self.out.weight)

    def _qkv(self, h: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[rows, T, hidden] at positions start.. -> q, k, v as [rows, heads, T, head_dim]."""
        rows, t, hidden = h.shape
        if start + t > self.positions:
            raise ValueError(f"position {start + t - 1} is past the attending exit's {self.positions} positions")
        y = self.norm(h) + self.position(torch.arange(start, start + t, device=h.device))
        return self.qkv(y).view(rows, t, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, h: torch.Tensor, start: int = 0, kv: torch.Tensor | None = None) -> torch.Tensor:
        """`h` [rows, T, hidden]: the states of positions start..start+T-1. Without `kv` the rows are
        whole sequences from position 0 (training: padding at their ends changes nothing before it);
        with `kv` ([2, heads, positions, head_dim], one sequence's), this pass's keys and values are
        written there and the queries attend every position up to their own."""
        q, k, v = self._qkv(h, start)
        if kv is None:
            if start:
                raise ValueError("an attending exit without its cache starts at position 0")
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            t = h.shape[1]
            kv[0, :, start:start + t], kv[1, :, start:start + t] = k[0], v[0]
            keys = torch.arange(start + t, device=h.device)
            mask = keys[None, :] <= torch.arange(start, start + t, device=h.device)[:, None]
            a = F.scaled_dot_product_attention(q, kv[0, None, :, :start + t], kv[1, None, :, :start + t],
                                               attn_mask=mask)
        return h + self.out(a.transpose(1, 2).reshape(h.shape))


class ExitHeads(nn.Module):
    """One adapter per exit layer (1-based index: the output of decoder layer `layer`); the layers in
    `attend` also get an `ExitAttention` over the sequence in front of their adapter."""

    def __init__(self, layers: list[int], hidden: int, rank: int, trained: bool = False,
                 attend: list[int] = (), attention_heads: int = 4, positions: int = 0):
        super().__init__()
        if not layers:
            raise ValueError("at least one exit layer is needed")
        self.layers = sorted(set(int(x) for x in layers))
        self.attend = sorted(set(int(x) for x in attend))
        if set(self.attend) - set(self.layers):
            raise ValueError(f"attending exits {sorted(set(self.attend) - set(self.layers))} are not exit layers "
                             f"{self.layers}")
        if self.attend and positions < 1:
            raise ValueError("attending exits need the number of positions they embed (the model's context)")
        self.rank = rank
        self.trained = trained
        self.attention_heads, self.positions = attention_heads, positions
        self.adapters = nn.ModuleDict({str(k): ExitAdapter(hidden, rank) for k in self.layers})
        self.attention = nn.ModuleDict({str(k): ExitAttention(hidden, attention_heads, positions)
                                        for k in self.attend})
        self.meta: dict = {}

    def logits(self, layer: int, hidden: torch.Tensor, parts: DecoderParts, start: int = 0,
               cache: "ExitCache | None" = None) -> torch.Tensor:
        """The exit's logits from layer `layer`'s states: `attended`, then `head`."""
        return self.head(layer, self.attended(layer, hidden, start, cache), parts)

    def attended(self, layer: int, hidden: torch.Tensor, start: int = 0,
                 cache: "ExitCache | None" = None) -> torch.Tensor:
        """Layer `layer`'s states after its exit's attention (unchanged where the exit does not
        attend). An attending exit reads whole sequences (`hidden` [rows, T, hidden] from position
        0), or one sequence's states at positions start.. with its `cache`, where it writes their keys."""
        h = hidden.to(self.adapters[str(layer)].linear.weight.dtype)  # float32 heads train on a bfloat16 model
        if layer not in self.attend:
            return h
        kv = cache.kv[layer] if cache is not None else None
        return self.attention[str(layer)](h if h.dim() == 3 else h[None], start, kv).view(h.shape)

    def head(self, layer: int, states: torch.Tensor, parts: DecoderParts) -> torch.Tensor:
        """The adapter, the final norm and lm_head on (attended) states of any shape."""
        adapter = self.adapters[str(layer)]
        out = adapter(states.to(adapter.linear.weight.dtype))
        return parts.lm_head(parts.norm(out.to(parts.lm_head.weight.dtype)))

    def new_cache(self, device: torch.device, dtype: torch.dtype) -> "ExitCache | None":
        """An empty cache for one sequence, or None when no exit attends."""
        return ExitCache(self, device, dtype) if self.attend else None

    def save(self, directory: str | Path, **meta) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS))
        self.meta.update(meta)
        shape = {"attend": self.attend, "attention_heads": self.attention_heads,
                 "attend_positions": self.positions} if self.attend else {}
        (directory / META).write_text(json.dumps(
            {**self.meta, "layers": self.layers, "rank": self.rank, "trained": self.trained, **shape}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "ExitHeads":
        directory = Path(directory)
        meta = json.loads((directory / META).read_text())
        with model_file_errors(directory):
            state = load_file(str(directory / WEIGHTS))
        hidden = state[f"adapters.{meta['layers'][0]}.linear.weight"].shape[0]
        shape = {"attend": meta["attend"], "attention_heads": meta["attention_heads"],
                 "positions": meta["attend_positions"]} if meta.get("attend") else {}
        heads = cls(meta["layers"], hidden, meta["rank"], trained=meta.get("trained", True), **shape)
        heads.load_state_dict(state)
        heads.meta = {k: v for k, v in meta.items()
                      if k not in ("layers", "rank", "trained", "attend", "attention_heads", "attend_positions")}
        return heads


class ExitCache:
    """One sequence's keys and values of its attending exits, [2, heads, positions, head_dim] per
    layer. Position p holds what the last pass that fed p wrote there: a rejected draft's entries
    are overwritten by the next pass, which feeds from the first uncached position on, and no query
    reads a position after its own."""

    def __init__(self, heads: ExitHeads, device: torch.device, dtype: torch.dtype):
        hidden = heads.adapters[str(heads.layers[0])].linear.in_features
        shape = (2, heads.attention_heads, heads.positions, hidden // heads.attention_heads)
        self.kv = {k: torch.zeros(shape, device=device, dtype=dtype) for k in heads.attend}


def attend_positions(max_positions: int) -> int:
    """How many positions an attending exit embeds: the model's context, up to 4096 (a 7B model's
    32k would cost an embedding as large as the exit; a robot's prompt and answer are far shorter)."""
    return min(max_positions, 4096)


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
