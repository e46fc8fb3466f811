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
from ..modeling.placement import CPU_FP32, Placement
from .sequence import CachedSequence, forward_rows
from .static_cache import CacheConfig, SlotCache, StaticSequence, static_forward_rows
from .graphs import SegmentGraphs
from .verify import Verdict, greedy_verdict, verdict


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
    rows: int = 1  # sequences verified in the same pass


class TargetEngine:
    """Owns the target model and its exit heads; one `TargetSequence` per response.

    The layer hooks are registered once, on the exit layers (every layer when a pacer emulates a
    profile's timing), and act only while a verification pass is running (`_pass`), so a round pays
    no hook bookkeeping and a prefill passes through them untouched.
    """

    def __init__(self, bundle: ModelBundle, heads: ExitHeads | None = None, pacer=None,
                 cache: CacheConfig = CacheConfig()):
        self.bundle = bundle
        self.cache = cache
        # static: every session in a slot of one preallocated cache (`static_cache.py`)
        self.slots = SlotCache(bundle, cache.slots, cache.length_for(bundle)) if cache.static_for(bundle) else None
        if cache.compile and heads is not None and heads.attend:
            raise ValueError(f"exits at layers {heads.attend} attend over the sequence: they run in eager passes "
                             "only (their per-sequence keys are not in the captured graphs); use --compile off")
        if cache.compile and (bundle.device.type != "cuda" or pacer is not None):
            raise ValueError("--compile on captures CUDA graphs: it needs a CUDA device and no timing profile "
                             f"(model on {bundle.device}{', profile given' if pacer else ''})")
        self.parts = decoder_parts(bundle.model)
        self.vocab_size = self.parts.lm_head.out_features
        # the heads live where the layers they read live, in the model's precision
        self.heads = heads.to(bundle.device, bundle.dtype).eval() if heads is not None else None
        self.graphs = SegmentGraphs(self.slots, self.heads) if cache.compile else None
        self.pacer = pacer
        if pacer is not None:
            pacer.num_layers = self.parts.num_layers
        self._pass: _Pass | None = None
        self._prefilling: TargetSequence | None = None  # whose prompt the hooks see outside a pass
        hooked = range(1, self.parts.num_layers + 1) if pacer is not None else (heads.layers if heads else [])
        for layer in hooked:
            self.parts.layers[layer - 1].register_forward_hook(self._hook(layer))

    @classmethod
    def from_dir(cls, directory, exits_dir=None, exit_layers: list[int] | None = None, pacer=None,
                 placement: Placement = CPU_FP32, cache: CacheConfig = CacheConfig()) -> "TargetEngine":
        """Load a target and its exit heads (beside it, or in `exits_dir`; untrained ones if none)."""
        from ..modeling.bundle import load_bundle
        from ..modeling.exit_heads import load_or_init_exit_heads
        bundle = load_bundle(directory, placement)
        heads = load_or_init_exit_heads(exits_dir or directory, decoder_parts(bundle.model), bundle.hidden_size,
                                        exit_layers)
        return cls(bundle, heads, pacer, cache)

    def start(self, prompt: Prompt, temperature: float = 0.0, seed: int = 0) -> "TargetSequence":
        prompt = self.bundle.attach_image(prompt) if prompt.image is not None else prompt
        seq = StaticSequence(self.bundle, prompt, self.slots) if self.slots else CachedSequence(self.bundle, prompt)
        return TargetSequence(self, seq, temperature, seed)

    @torch.no_grad()
    def verify(self, requests: list[VerifyRequest]) -> list[PassResult]:
        """Verify several sequences' drafts in ONE forward pass (one row each, padded); one result each.

        Each exit layer's hook (eager), or the pinned copy behind each exit's segment graph (compiled,
        graphs.py), gives every row's early verdict to that row's callback as soon as the layer is
        done, so all batched robots get their EARLY mid-pass. Sequences
        that cannot join a batch (their image not yet in the cache) get passes of their own. The
        seconds reported are the whole verification: the pass, the verdicts and the commit.
        """
        if len(requests) > 1 and not all(r.seq.seq.batchable for r in requests):
            return [self.verify([r])[0] for r in requests]
        t0 = time.perf_counter()
        p = _Pass(requests, t0, self.heads)
        seqs = [r.seq.seq for r in requests]
        all_logits = None
        if self.graphs is not None:  # the hooks stay quiet: graph warm-up and capture run the layers too
            sampled = {row for row, r in enumerate(requests) if r.seq.temperature > 0}
            all_logits = self.graphs.run(seqs, p.tails, sampled, p.graph_exit)
        if all_logits is None:  # eager: the exits come from the layer hooks
            self._pass = p
            try:
                all_logits = (static_forward_rows if self.slots else forward_rows)(seqs, p.tails)
            finally:
                self._pass = None
        results = []
        for row, (r, logits) in enumerate(zip(requests, all_logits)):
            start_pos, n = p.starts[row], p.sizes[row]
            final = verdict(logits[-n:], r.draft, r.draft_probs, r.seq.temperature, r.seq.seed, start_pos)
            # commit: keep last committed + accepted draft tokens in the cache, append the next token
            r.seq.tokens[start_pos + 1:] = r.draft[: final.accepted] + [final.next_token]
            r.seq.seq.truncate_cache(start_pos + 1 + final.accepted)
            results.append(final)
        if self.pacer is not None:
            self.pacer.target_done(t0, p.tokens)
        seconds = time.perf_counter() - t0
        return [PassResult(final, row_exits, seconds, len(requests)) for final, row_exits in zip(results, p.exits)]

    def _hook(self, layer: int):
        def hook(_module, _inputs, output):
            p = self._pass
            if p is None:
                if self._prefilling is not None and self.heads is not None and layer in self.heads.attend:
                    seq = self._prefilling   # the prompt's keys only: no verdict to make
                    hidden = output[0] if isinstance(output, tuple) else output
                    self.heads.attended(layer, hidden[0], seq.seq.cached, seq.exit_cache)
                return  # a prefill (an attending exit keeps its keys), or a pass of the draft
            if self.pacer is not None:
                self.pacer.target_layer(p.t0, layer, p.tokens)
            if self.heads is None or layer not in self.heads.layers:
                return
            hidden = output[0] if isinstance(output, tuple) else output
            attend = layer in self.heads.attend
            for row, r in enumerate(p.requests):
                rows = p.verified(row)
                states = hidden[row, rows]
                if attend:  # every fed position's keys go to the row's cache, whether or not it wants the verdict
                    states = self.heads.attended(layer, hidden[row, :rows.stop], r.seq.seq.cached,
                                                 r.seq.exit_cache)[rows]
                if layer in p.wanted[row]:
                    logits = self.heads.head(layer, states, self.parts)
                    p.report(row, layer, verdict(logits, r.draft, r.draft_probs, r.seq.temperature, r.seq.seed,
                                                 p.starts[row]))
        return hook


class _Pass:
    """What the layer hooks need to know about the verification pass in progress."""

    def __init__(self, requests: list[VerifyRequest], t0: float, heads: ExitHeads | None):
        self.requests, self.t0 = requests, t0
        self.starts = [len(r.seq.tokens) - 1 for r in requests]  # absolute position of each first verified row
        self.sizes = [len(r.draft) + 1 for r in requests]
        self.tails = [r.seq.seq.tail(r.draft) for r in requests]  # each row: uncached tail + draft
        self.tokens = len(requests) * max(self.sizes)             # rows x width, for the pacer
        default = heads.layers if heads is not None else []
        self.wanted = [set(r.exit_layers if r.exit_layers is not None else default) for r in requests]
        self.exits: list[list[ExitVerdict]] = [[] for _ in requests]

    def verified(self, row: int) -> slice:
        """Where a row's verified positions (last committed token + draft) sit in its tail."""
        fed, n = len(self.tails[row]), self.sizes[row]
        return slice(fed - n, fed)

    def report(self, row: int, layer: int, v: Verdict) -> None:
        ev = ExitVerdict(layer, v, time.perf_counter() - self.t0)
        self.exits[row].append(ev)
        r = self.requests[row]
        if r.on_exit is not None:
            r.on_exit(ev)

    def graph_exit(self, layer: int, top: list, second: list, conf: list, logits_host: torch.Tensor | None) -> None:
        """An exit's verdict inputs from a replayed graph (host lists; pinned logits when a row samples);
        the second choices give a greedy EARLY the alternatives fan-out pre-drafts for."""
        for row, r in enumerate(self.requests):
            if layer not in self.wanted[row]:
                continue
            rows = self.verified(row)
            if r.seq.temperature > 0:
                v = verdict(logits_host[row, rows], r.draft, r.draft_probs, r.seq.temperature, r.seq.seed,
                            self.starts[row])
            else:
                v = greedy_verdict(top[row][rows], conf[row][rows], r.draft, second[row][rows])
            self.report(row, layer, v)


@dataclass
class VerifyRequest:
    """One sequence's share of a verification pass: its draft and where its early verdicts go."""
    seq: "TargetSequence"
    draft: list[int]
    draft_probs: torch.Tensor | None = None
    exit_layers: list[int] | None = None
    on_exit: Callable[[ExitVerdict], None] | None = None


class TargetSequence:
    def __init__(self, engine: TargetEngine, seq: CachedSequence, temperature: float, seed: int):
        self.engine, self.seq = engine, seq
        self.temperature, self.seed = temperature, seed
        heads = engine.heads
        self.exit_cache = heads.new_cache(engine.bundle.device, engine.bundle.dtype) if heads is not None else None

    @property
    def tokens(self) -> list[int]:
        return self.seq.tokens

    def prefill(self) -> float:
        start = time.perf_counter()
        self.engine._prefilling = self
        try:
            self.seq.prefill()
        finally:
            self.engine._prefilling = None
        if self.engine.pacer is not None:
            self.engine.pacer.target_prefill(start)
        return time.perf_counter() - start

    def verify(self, draft: list[int], draft_probs: torch.Tensor | None = None,
               exit_layers: list[int] | None = None,
               on_exit: Callable[[ExitVerdict], None] | None = None) -> PassResult:
        """One pass over [last committed token] + draft; commits the accepted prefix and the next token.

        An empty draft is one autoregressive step (cloud decoding uses exactly this).
        """
        return self.engine.verify([VerifyRequest(self, list(draft), draft_probs, exit_layers, on_exit)])[0]
