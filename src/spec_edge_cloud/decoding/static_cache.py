"""A preallocated KV cache with one slot per session, and the target's passes over it.

Why static: a dynamic cache changes shape every pass, which a CUDA graph cannot replay; a slot of
fixed length has fixed addresses, so one captured graph serves every pass of its (rows, tokens)
bucket (`graphs.py`). Rollback is a position reset: `cached` goes back, and the stale keys beyond it
are masked until overwritten.

Why it is also the bfloat16 reference: attention always runs over the slot's whole length (the
unwritten part masked to an exact zero weight), so a token's keys, values and logits come out of
the same arithmetic whether the token is verified in a multi-token pass or decoded alone in a
one-token step; Hugging Face's own greedy `generate()` with a `StaticCache` of the same length does
the same. A multi-token pass over a dynamic cache attends over a different key length than a
one-token step, and in bfloat16 that difference shows in the last bits (tests/test_gpu_static.py).

Layout: `slots + 1` slots of `max_len + 1` positions per layer. The extra slot and the extra
position are scratch: padding rows and padding tokens of a batched pass write there, never attended
by a real token (a real token's position is below `max_len`, and it attends only positions up to its
own).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from transformers import StaticCache

from ..modeling.bundle import ModelBundle, Prompt
from ..modeling.layers import DecoderParts, decoder_parts
from .sequence import CachedSequence


@dataclass(frozen=True)
class CacheConfig:
    """How the target caches keys and values: `dynamic` (grown per pass, Hugging Face's DynamicCache),
    `static` (`slots` preallocated slots of `max_len` tokens; 0: the model's context, at most 2048), or
    `auto`: static on a GPU or in reduced precision (what graphs and bfloat16 losslessness need),
    dynamic for float32 on the CPU. `compile` captures the static passes as CUDA graphs (graphs.py)."""
    kind: str = "auto"
    slots: int = 16
    max_len: int = 0
    compile: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "dynamic", "static"):
            raise ValueError(f"cache must be auto, dynamic or static, got {self.kind!r}")
        if self.slots < 1 or self.max_len < 0:
            raise ValueError(f"cache_slots must be >= 1 and max_cache_len >= 0, got {self.slots}, {self.max_len}")
        if self.compile and self.kind == "dynamic":
            raise ValueError("--compile on needs the static cache (graphs replay fixed addresses)")

    def static_for(self, bundle: ModelBundle) -> bool:
        if self.kind == "auto":
            return self.compile or bundle.device.type == "cuda" or bundle.dtype != torch.float32
        return self.kind == "static"

    def length_for(self, bundle: ModelBundle) -> int:
        return self.max_len or min(2048, bundle.max_positions - 1)


class CacheFull(ValueError):
    """A response would outgrow its slot, or every slot is taken: the request gets an ERROR."""


class SlotCache:
    """Keys and values of `slots` sequences of up to `max_len` tokens, allocated once, reused."""

    def __init__(self, bundle: ModelBundle, slots: int, max_len: int):
        if slots < 1 or max_len < 2:
            raise ValueError(f"a static cache needs at least 1 slot and 2 positions, got {slots} x {max_len}")
        if max_len >= bundle.max_positions:
            raise ValueError(f"max_cache_len {max_len} does not fit the model's context of {bundle.max_positions}")
        self.bundle = bundle
        self.parts: DecoderParts = decoder_parts(bundle.model)
        attn = self.parts.layers[0].self_attn
        heads = bundle.model.config.get_text_config().num_key_value_heads
        self.slots, self.max_len = slots, max_len
        self.kv_len = max_len + 1
        self.scratch_slot, self.scratch_pos = slots, max_len
        shape = (slots + 1, heads, self.kv_len, attn.head_dim)
        self.keys = [torch.zeros(shape, dtype=bundle.dtype, device=bundle.device) for _ in self.parts.layers]
        self.values = [torch.zeros(shape, dtype=bundle.dtype, device=bundle.device) for _ in self.parts.layers]
        self._free = list(range(slots - 1, -1, -1))

    def acquire(self) -> int:
        if not self._free:
            raise CacheFull(f"all {self.slots} static cache slots are in use (raise cache_slots, or end sessions)")
        return self._free.pop()

    def release(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def in_use(self) -> int:
        return self.slots - len(self._free)


class PassCache:
    """The cache the decoder layers see during one pass: each row's new keys and values go to its
    slot at its positions; attention gets the rows' slots over their whole length."""

    def __init__(self, cache: SlotCache, slots: torch.Tensor, positions: torch.Tensor):
        self.cache, self.slots, self.positions = cache, slots, positions  # [rows], [rows, width]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.cache.keys[layer_idx], self.cache.values[layer_idx]
        rows = self.slots[:, None]
        keys[rows, :, self.positions] = key_states.transpose(1, 2)  # [rows, width, heads, dim]
        values[rows, :, self.positions] = value_states.transpose(1, 2)
        return keys[self.slots], values[self.slots]


class StaticSequence(CachedSequence):
    """A CachedSequence whose cache is a slot of a SlotCache (given back when the sequence goes)."""

    def __init__(self, bundle: ModelBundle, prompt: Prompt, cache: SlotCache):
        super().__init__(bundle, prompt)
        self.cache = None  # the slot holds the keys and values
        self.slots = cache
        self.slot = cache.acquire()
        weakref.finalize(self, cache.release, self.slot)

    def _check_room(self, n: int) -> None:
        super()._check_room(n)
        if n > self.slots.max_len:
            raise CacheFull(f"the response would reach {n} tokens, past the static cache's {self.slots.max_len} "
                            "(max_cache_len)")

    def truncate_cache(self, n: int) -> None:
        self.cached = min(self.cached, n)  # a position reset: what lies beyond is masked until overwritten

    @torch.no_grad()
    def forward(self, new: list[int]) -> torch.Tensor:
        if self.cached > 0:
            return static_forward_rows([self], [new])[0]
        # the prompt (with its image) goes through the model's own forward, over a static cache of the
        # slot's length, and its keys and values are copied into the slot
        scratch = StaticCache(config=self.model.config, max_cache_len=self.slots.kv_len)
        hf_cache, self.cache = self.cache, scratch
        try:
            logits = super().forward(new)
        finally:
            self.cache = hf_cache
        n = len(new)
        for i, layer in enumerate(scratch.layers):
            self.slots.keys[i][self.slot, :, :n] = layer.keys[0, :, :n]
            self.slots.values[i][self.slot, :, :n] = layer.values[0, :, :n]
        return logits


def pass_inputs(seqs: list[StaticSequence], tails: list[list[int]], width: int | None = None,
                rows: int | None = None) -> dict[str, torch.Tensor]:
    """Token ids, slot indices, cache positions and rope positions of one pass, padded to `width`
    tokens and `rows` rows (a graph bucket's shape; by default the pass's own)."""
    cache = seqs[0].slots
    width = width or max(map(len, tails))
    rows = rows or len(seqs)
    ids = torch.zeros(rows, width, dtype=torch.long)
    slots = torch.full((rows,), cache.scratch_slot, dtype=torch.long)
    positions = torch.full((rows, width), cache.scratch_pos, dtype=torch.long)
    rope = torch.zeros(rows, width, dtype=torch.long)
    for r, (s, tail) in enumerate(zip(seqs, tails)):
        ids[r, :len(tail)] = torch.tensor(tail)
        slots[r] = s.slot
        positions[r, :len(tail)] = torch.arange(s.cached, s.cached + len(tail))
        rope[r] = torch.arange(s.cached, s.cached + width) + s.rope_delta
    device = cache.bundle.device
    return {"ids": ids.to(device), "slots": slots.to(device), "positions": positions.to(device),
            "rope": rope.to(device)}


def embed(cache: SlotCache, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """Hidden states, rotary embeddings and attention mask of a pass: what every layer takes."""
    parts = cache.parts
    hidden = parts.embed(inputs["ids"])
    rope = inputs["rope"]
    if hasattr(cache.bundle.model.config, "vision_config"):  # M-RoPE: the same text position on all 3 axes
        rope = rope[None].expand(3, *rope.shape)
    cos_sin = parts.rotary(hidden, rope)
    keys = torch.arange(cache.kv_len, device=hidden.device)
    mask = (keys[None, None, None, :] <= inputs["positions"][:, None, :, None])  # [rows, 1, width, kv_len]
    return hidden, cos_sin, mask


def run_layers(cache: SlotCache, hidden: torch.Tensor, cos_sin: tuple, mask: torch.Tensor,
               pass_cache: PassCache, first: int, last: int) -> torch.Tensor:
    """Decoder layers first+1..last (1-based, as exit layers are named): one segment of the pass."""
    for layer in cache.parts.layers[first:last]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=cos_sin, cache=pass_cache, use_cache=True)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden


@torch.no_grad()
def static_forward_rows(seqs: list[StaticSequence], tails: list[list[int]]) -> list[torch.Tensor]:
    """`forward_rows` over slots: every row's tail at its own positions in one eager pass; logits
    [len(tail), vocab] each. The layers are called as modules, so exit hooks fire as usual. A sequence
    whose prompt is not cached yet goes alone through its own forward: only that one passes the image."""
    if len(seqs) == 1 and seqs[0].cached == 0:
        return [seqs[0].forward(tails[0])]
    if len(seqs) > 1 and not all(s.batchable for s in seqs):
        raise ValueError("a batched pass needs every sequence past its prompt prefill")
    cache = seqs[0].slots
    if any(s.slots is not cache for s in seqs):
        raise ValueError("a batched pass needs sequences of one static cache")
    for s, tail in zip(seqs, tails):
        s._check_room(s.cached + len(tail))
    inputs = pass_inputs(seqs, tails)
    hidden, cos_sin, mask = embed(cache, inputs)
    pass_cache = PassCache(cache, inputs["slots"], inputs["positions"])
    hidden = run_layers(cache, hidden, cos_sin, mask, pass_cache, 0, cache.parts.num_layers)
    logits = cache.parts.lm_head(cache.parts.norm(hidden))
    out = []
    for r, (s, tail) in enumerate(zip(seqs, tails)):
        s.cached += len(tail)
        out.append(logits[r, :len(tail)].float())
    return out
