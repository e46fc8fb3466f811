"""One token sequence and the KV cache that covers a prefix of it.

Both engines keep the same invariant: `tokens` is the sequence so far and the cache covers
`tokens[:cached]`. To predict the next token, the uncached tail is fed in one pass (usually one token:
the last committed one). Rollback is `truncate(n)`: the list is cut and the cache cropped, never
recomputed. Positions are passed explicitly, so Qwen2-VL's M-RoPE offset (rope delta after the image)
lives here, per sequence, and not in the model object that several sessions may share.

`forward_rows` runs several sequences of one model in a single padded pass (the cloud batching
different robots' rounds): caches of different lengths are left-padded into one batch cache, the
new tokens right-padded, an attention mask hides the padding, and each sequence gets its own slice
of the grown cache back.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from ..modeling.bundle import ModelBundle, Prompt


class CachedSequence:
    def __init__(self, bundle: ModelBundle, prompt: Prompt):
        self.bundle = bundle
        self.model = bundle.model
        self.tokens: list[int] = list(prompt.input_ids)
        self.prompt_len = len(prompt.input_ids)
        self.cache = DynamicCache(config=self.model.config)
        self.cached = 0
        self.rope_delta = 0
        self._vision = prompt.vision
        self._mrope = hasattr(self.model.config, "vision_config")

    # -- forward ---------------------------------------------------------------------------------
    def _positions(self, start: int, n: int) -> torch.Tensor:
        pos = torch.arange(start + self.rope_delta, start + self.rope_delta + n, device=self.bundle.device).view(1, -1)
        return pos.view(1, 1, -1).expand(3, 1, n) if self._mrope else pos

    @torch.no_grad()
    def forward(self, new: list[int]) -> torch.Tensor:
        """Feed `new` tokens after the cached prefix; returns their logits [len(new), vocab].

        The first call with a vision prompt passes the image with the M-RoPE positions of the prompt,
        and keeps the rope delta they imply; later calls pass plain positions shifted by it. Positions
        always go in explicitly: left to itself, Qwen2-VL keeps its rope delta in the model object,
        which threads that share the model (robots in one test process) would overwrite.
        """
        ids = torch.tensor([new], dtype=torch.long, device=self.bundle.device)
        kwargs = {}
        if self.cached == 0 and self._vision:
            kwargs.update(self._vision)
            kwargs["mm_token_type_ids"] = (ids == self.bundle.image_token_id).int()
            kwargs["position_ids"], delta = self.model.model.get_rope_index(
                ids, kwargs["mm_token_type_ids"], image_grid_thw=self._vision["image_grid_thw"])
            self.rope_delta = int(delta.view(-1)[0])
        else:
            kwargs["position_ids"] = self._positions(self.cached, len(new))
        out = self.model(input_ids=ids, cache=self.cache, use_cache=True, **kwargs)
        self.cached += len(new)
        return out.logits[0].float()

    def tail(self, extra: list[int] = ()) -> list[int]:
        """The uncached tail plus `extra`: what the next pass feeds (at least one token, so the logits
        that predict the token after `tokens` exist); crops the cache if it covers everything."""
        if self.cached >= len(self.tokens):
            self.truncate_cache(len(self.tokens) - 1)
        tail = self.tokens[self.cached:] + list(extra)
        self._check_room(self.cached + len(tail))
        return tail

    def _check_room(self, n: int) -> None:
        """A clear error before a pass that would hold `n` tokens and not fit."""
        self.bundle.check_length(n)

    def feed_tail(self, extra: list[int] = ()) -> torch.Tensor:
        """Feed the uncached tail plus `extra`; returns logits for the last len(extra)+1 positions."""
        logits = self.forward(self.tail(extra))
        return logits[-(len(extra) + 1):]

    @property
    def batchable(self) -> bool:
        """Whether this sequence can join a padded batch: its prompt (and image, if any) is already in
        its cache, so the pass feeds plain tokens at explicit positions."""
        return min(self.cached, len(self.tokens) - 1) > 0

    def prefill(self) -> None:
        """Cache the prompt but its last token (the first prediction comes with the first real pass)."""
        if self.cached == 0 and len(self.tokens) > 1:
            self._check_room(len(self.tokens))
            self.forward(self.tokens[:-1])

    # -- rollback --------------------------------------------------------------------------------
    def truncate_cache(self, n: int) -> None:
        if n < self.cached:
            self.cache.crop(n - self.cached)  # transformers 5: a negative count of tokens to drop
            self.cached = n

    def truncate(self, n: int) -> None:
        """Keep the first n tokens (n >= prompt length); the cache is cropped, never recomputed."""
        if n < self.prompt_len:
            raise ValueError(f"cannot roll back into the prompt ({n} < {self.prompt_len})")
        del self.tokens[n:]
        self.truncate_cache(n)

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len:]


@torch.no_grad()
def forward_rows(seqs: list[CachedSequence], tails: list[list[int]]) -> list[torch.Tensor]:
    """`forward(tail)` for several sequences of one model in one pass: logits [len(tail), vocab] each.

    More than one sequence needs every one `batchable`. Row r's cache (c_r tokens) is left-padded to
    the longest one, its tail (t_r tokens) right-padded to the widest; the mask hides both paddings
    and the positions are row r's own, so each row computes what it would alone. Afterwards row r's
    cache is the batch cache's slice [past - c_r, past + t_r).
    """
    if len(seqs) == 1:
        return [seqs[0].forward(tails[0])]
    if not all(s.batchable for s in seqs) or len({id(s.model) for s in seqs}) != 1:
        raise ValueError("a batched pass needs sequences of one model, each past its prompt prefill")
    past, width, rows = max(s.cached for s in seqs), max(map(len, tails)), len(seqs)
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, past + width, dtype=torch.long)
    for r, (s, tail) in enumerate(zip(seqs, tails)):
        ids[r, :len(tail)] = torch.tensor(tail)
        mask[r, past - s.cached: past + len(tail)] = 1
    device = seqs[0].bundle.device
    ids, mask = ids.to(device), mask.to(device)  # built on the host, sent in one copy each
    # [rows, width], or [3, rows, width] with M-RoPE: each row at its own positions
    position_ids = torch.cat([s._positions(s.cached, width) for s in seqs], dim=-2)
    cache = DynamicCache(config=seqs[0].model.config)
    for i in range(len(seqs[0].cache.layers)):
        cache.update(torch.cat([_left_pad(s.cache.layers[i].keys, past) for s in seqs]),
                     torch.cat([_left_pad(s.cache.layers[i].values, past) for s in seqs]), i)
    out = seqs[0].model(input_ids=ids, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=True)
    logits = []
    for r, (s, tail) in enumerate(zip(seqs, tails)):
        keep = slice(past - s.cached, past + len(tail))
        for mine, batch in zip(s.cache.layers, cache.layers):
            mine.keys = batch.keys[r:r + 1, :, keep].clone()
            mine.values = batch.values[r:r + 1, :, keep].clone()
        s.cached += len(tail)
        logits.append(out.logits[r, :len(tail)].float())
    return logits


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """[1, heads, n, dim] -> [1, heads, length, dim], zeros in front (masked out in the pass)."""
    return torch.nn.functional.pad(t, (0, 0, length - t.shape[-2], 0))
