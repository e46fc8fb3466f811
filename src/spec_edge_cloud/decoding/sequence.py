"""One token sequence and the KV cache that covers a prefix of it.

Both engines keep the same invariant: `tokens` is the sequence so far and the cache covers
`tokens[:cached]`. To predict the next token, the uncached tail is fed in one pass (usually one token:
the last committed one). Rollback is `truncate(n)`: the list is cut and the cache cropped, never
recomputed. Positions are passed explicitly, so Qwen2-VL's M-RoPE offset (rope delta after the image)
lives here, per sequence, and not in the model object that several sessions may share.
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
        pos = torch.arange(start, start + n).view(1, -1) + self.rope_delta
        return pos.view(1, 1, -1).expand(3, 1, n) if self._mrope else pos

    @torch.no_grad()
    def forward(self, new: list[int]) -> torch.Tensor:
        """Feed `new` tokens after the cached prefix; returns their logits [len(new), vocab].

        The first call with a vision prompt passes the image (and lets the model compute M-RoPE
        positions); later calls pass explicit positions with the rope delta it found.
        """
        ids = torch.tensor([new], dtype=torch.long)
        kwargs = {}
        if self.cached == 0 and self._vision:
            kwargs.update(self._vision)
            kwargs["mm_token_type_ids"] = (ids == self.bundle.image_token_id).int()
            self.model.model.rope_deltas = None
        else:
            kwargs["position_ids"] = self._positions(self.cached, len(new))
        out = self.model(input_ids=ids, cache=self.cache, use_cache=True, **kwargs)
        if self.cached == 0 and self._vision:
            self.rope_delta = int(self.model.model.rope_deltas.view(-1)[0])
        self.cached += len(new)
        return out.logits[0].float()

    def feed_tail(self, extra: list[int] = ()) -> torch.Tensor:
        """Feed the uncached tail plus `extra`; returns logits for the last len(extra)+1 positions.

        Always feeds at least one token, so the logits that predict the token after `tokens` exist.
        """
        if self.cached >= len(self.tokens):
            self.truncate_cache(len(self.tokens) - 1)
        tail = self.tokens[self.cached:] + list(extra)
        self.bundle.check_length(self.cached + len(tail))
        logits = self.forward(tail)
        return logits[-(len(extra) + 1):]

    def prefill(self) -> None:
        """Cache the prompt but its last token (the first prediction comes with the first real pass)."""
        if self.cached == 0 and len(self.tokens) > 1:
            self.bundle.check_length(len(self.tokens))
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
