"""The cloud's target engine: verifies a whole draft in one forward pass, with early exits on the way.

Forward hooks on the exit layers compute each exit head's verdict the moment that layer's output
exists and hand it to a callback, while the pass goes on: a server can put the EARLY message on the
wire before the remaining layers run, and the layers below an exit are never recomputed. The final
verdict then comes from the real output layer, so early exits change when verdicts arrive, never
what is committed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..modeling.bundle import ModelBundle, Prompt
from ..modeling.exit_heads import ExitHeads
from ..modeling.layers import decoder_parts
from .sequence import CachedSequence
from .verify import Verdict, verdict


@dataclass(frozen=True)
class ExitVerdict:
    layer: int
    verdict: Verdict
    at: float  # seconds from the start of the pass


@dataclass
class PassResult:
    verdict: Verdict
    exits: list[ExitVerdict] = field(default_factory=list)
    seconds: float = 0.0


class TargetEngine:
    """Owns the target model and its exit heads; one `TargetSequence` per response."""

    def __init__(self, bundle: ModelBundle, heads: ExitHeads | None = None, pacer=None):
        self.bundle = bundle
        self.parts = decoder_parts(bundle.model)
        self.heads = heads.eval() if heads is not None else None
        self.pacer = pacer
        if pacer is not None:
            pacer.num_layers = self.parts.num_layers

    @classmethod
    def from_dir(cls, directory, exits_dir=None, exit_layers: list[int] | None = None, pacer=None) -> "TargetEngine":
        """Load a target and its exit heads (beside it, or in `exits_dir`; untrained ones if none)."""
        from ..modeling.bundle import load_bundle
        from ..modeling.exit_heads import load_or_init_exit_heads
        bundle = load_bundle(directory)
        heads = load_or_init_exit_heads(exits_dir or directory, decoder_parts(bundle.model), bundle.hidden_size,
                                        exit_layers)
        return cls(bundle, heads, pacer)

    def start(self, prompt: Prompt, temperature: float = 0.0, seed: int = 0) -> "TargetSequence":
        prompt = self.bundle.attach_image(prompt) if prompt.image is not None else prompt
        return TargetSequence(self, CachedSequence(self.bundle, prompt), temperature, seed)


class TargetSequence:
    def __init__(self, engine: TargetEngine, seq: CachedSequence, temperature: float, seed: int):
        self.engine, self.seq = engine, seq
        self.temperature, self.seed = temperature, seed

    @property
    def tokens(self) -> list[int]:
        return self.seq.tokens

    def prefill(self) -> float:
        start = time.perf_counter()
        self.seq.prefill()
        if self.engine.pacer is not None:
            self.engine.pacer.target_prefill(start)
        return time.perf_counter() - start

    @torch.no_grad()
    def verify(self, draft: list[int], draft_probs: torch.Tensor | None = None,
               exit_layers: list[int] | None = None,
               on_exit: Callable[[ExitVerdict], None] | None = None) -> PassResult:
        """One pass over [last committed token] + draft; commits the accepted prefix and the next token.

        An empty draft is one autoregressive step (cloud decoding uses exactly this).
        """
        engine, parts, heads = self.engine, self.engine.parts, self.engine.heads
        n = len(draft) + 1
        start_pos = len(self.seq.tokens) - 1  # absolute position of the first verified row
        exits: list[ExitVerdict] = []
        wanted = set(exit_layers if exit_layers is not None else (heads.layers if heads else []))
        hooks = []
        t0 = time.perf_counter()

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                if engine.pacer is not None:
                    engine.pacer.target_layer(t0, layer, n)
                if layer in wanted and heads is not None and layer in heads.layers:
                    hidden = output[0] if isinstance(output, tuple) else output
                    logits = heads.logits(layer, hidden[0, -n:], parts)
                    v = verdict(logits, draft, draft_probs, self.temperature, self.seed, start_pos)
                    ev = ExitVerdict(layer, v, time.perf_counter() - t0)
                    exits.append(ev)
                    if on_exit is not None:
                        on_exit(ev)
            return hook

        if heads is not None or engine.pacer is not None:
            for i, layer_module in enumerate(parts.layers, start=1):
                hooks.append(layer_module.register_forward_hook(make_hook(i)))
        try:
            logits = self.seq.feed_tail(draft)
        finally:
            for h in hooks:
                h.remove()
        final = verdict(logits, draft, draft_probs, self.temperature, self.seed, start_pos)
        if engine.pacer is not None:
            engine.pacer.target_done(t0, n)
        # commit: keep last committed + accepted draft tokens in the cache, append the next token
        keep = start_pos + 1 + final.accepted
        self.seq.tokens[start_pos + 1:] = draft[: final.accepted] + [final.next_token]
        self.seq.truncate_cache(keep)
        return PassResult(final, exits, time.perf_counter() - t0)
