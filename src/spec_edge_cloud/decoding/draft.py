"""The robot's draft engine: guesses the next tokens with a small model and rolls back on a miss."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..modeling.bundle import ModelBundle, Prompt
from .sequence import CachedSequence
from .verify import DRAFT, probabilities, sample, truncate


@dataclass
class Draft:
    tokens: list[int]
    probs: torch.Tensor | None  # [len(tokens), k] the draft's truncated distributions (sampling only)
    seconds: float
    support: list[list[int]] | None = None  # the token of each probability (None: probs is [len(tokens), V])


class DraftEngine:
    """Greedy or sampled drafting over a KV cache; `rollback(n)` + `append(t)` follow the verdicts.

    Drafting may stop early when the draft's own top-1 probability drops below `min_confidence`:
    a token the draft itself doubts is likely to be rejected and only costs time.
    """

    def __init__(self, bundle: ModelBundle, temperature: float = 0.0, seed: int = 0,
                 min_confidence: float = 0.0, pacer=None, top_k: int = 0, top_p: float = 1.0):
        self.bundle = bundle
        self.temperature = temperature
        self.seed = seed
        self.min_confidence = min_confidence
        self.pacer = pacer
        self.top_k, self.top_p = top_k, top_p
        self.seq: CachedSequence | None = None

    def prefill(self, prompt: Prompt) -> None:
        start = time.perf_counter()
        self.seq = CachedSequence(self.bundle, self.bundle.attach_image(prompt) if prompt.image is not None
                                  else prompt)
        self.seq.prefill()
        if self.pacer is not None:
            self.pacer.draft_prefill(start)

    @property
    def tokens(self) -> list[int]:
        return self.seq.tokens

    def draft(self, n: int) -> Draft:
        """Append up to n guessed tokens to the sequence (the last one stays uncached)."""
        if n <= 0:
            raise ValueError(f"draft length must be positive, got {n}")
        start = time.perf_counter()
        tokens, rows, support = [], [], []
        truncated = self.top_k > 0 or self.top_p < 1.0
        for _ in range(n):
            logits = self.seq.feed_tail()[-1]
            if self.temperature > 0:  # the distribution goes to the cloud anyway: one copy to the host
                probs = probabilities(logits, self.temperature)
                if truncated:
                    ids, probs = torch.stack(truncate(probs, self.top_k, self.top_p)).cpu()  # one copy
                    ids, probs = ids.long().tolist(), probs.float()
                    pick = sample(probs, self.seed, len(self.seq.tokens), DRAFT)
                    tok, conf = ids[pick], float(probs[pick])
                    support.append(ids)
                else:
                    probs = probs.cpu()
                    tok = sample(probs, self.seed, len(self.seq.tokens), DRAFT)
                    conf = float(probs[tok])
                rows.append(probs)
            else:  # one host sync a token: its id and probability together
                top, arg = torch.softmax(logits, -1).max(-1)
                conf, tok = torch.stack([top.double(), arg.double()]).tolist()
                tok = int(tok)
            if tokens and conf < self.min_confidence:
                rows, support = rows[: len(tokens)], support[: len(tokens)]
                break
            tokens.append(tok)
            self.seq.tokens.append(tok)
            if self.pacer is not None:
                self.pacer.draft_token(start, len(tokens))
            if tok in self.bundle.eos_ids:
                break
        probs = torch.stack(rows) if rows else None
        return Draft(tokens, probs, time.perf_counter() - start, support if rows and truncated else None)

    def rollback(self, length: int) -> None:
        self.seq.truncate(length)

    def append(self, token: int) -> None:
        self.seq.tokens.append(token)
