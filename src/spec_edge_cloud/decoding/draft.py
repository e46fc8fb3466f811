"""The robot's draft engine: guesses the next tokens with a small model and rolls back on a miss."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

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
    forced: int = 0                         # of `tokens`, proposed by the grammar without a draft step


def point_mass(token: int, width: int, truncated: bool) -> tuple[torch.Tensor, list[int] | None]:
    """A draft distribution certain of `token` (q = 1), as a row `width` wide: over the vocabulary, or
    (`truncated`) over a support of the token repeated. Speculative sampling accepts such a token with
    probability p(token), else draws from p without it: exact, as for any draft distribution."""
    row = torch.zeros(width)
    if truncated:
        row[0] = 1.0
        return row, [token] * width
    row[token] = 1.0
    return row, None


class DraftEngine:
    """Greedy or sampled drafting over a KV cache; `rollback(n)` + `append(t)` follow the verdicts.

    Drafting may stop early when the draft's own top-1 probability drops below `min_confidence`:
    a token the draft itself doubts is likely to be rejected and only costs time. A token the
    answer's grammar forces (`draft(..., forced=)`) is proposed without a draft step: the next step
    feeds it to the model together with the token before it.
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

    @property
    def _width(self) -> int:
        """Columns of a sampled draft row: the support's k, or the vocabulary."""
        vocab = self.bundle.model.get_output_embeddings().weight.shape[0]
        return min(self.top_k or vocab, vocab)

    def draft(self, n: int, forced: Callable[[list[int]], int | None] | None = None) -> Draft:
        """Append up to n guessed tokens to the sequence (the last ones stay uncached); `forced(tokens)`:
        the token the grammar forces after the sequence's `tokens`, if any, proposed without a step."""
        if n <= 0:
            raise ValueError(f"draft length must be positive, got {n}")
        start = time.perf_counter()
        tokens, rows, support = [], [], []
        truncated = self.top_k > 0 or self.top_p < 1.0
        steps = 0
        for _ in range(n):
            tok = forced(self.seq.tokens) if forced is not None else None
            if tok is not None:
                if self.temperature > 0:
                    row, ids = point_mass(tok, self._width, truncated)
                    rows.append(row)
                    support.append(ids)
                tokens.append(tok)
                self.seq.tokens.append(tok)
                continue
            logits = self.seq.feed_tail()[-1]
            steps += 1
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
                self.pacer.draft_token(start, steps)
            if tok in self.bundle.eos_ids:
                break
        probs = torch.stack(rows) if rows else None
        return Draft(tokens, probs, time.perf_counter() - start, support if rows and truncated else None,
                     len(tokens) - steps)

    def rollback(self, length: int) -> None:
        self.seq.truncate(length)

    def append(self, token: int) -> None:
        self.seq.tokens.append(token)
