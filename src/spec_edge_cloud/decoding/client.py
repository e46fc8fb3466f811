"""The robot's state machine for one response, in every mode, over any `Link`.

Speculative rounds (spec, spec-ee, spec-ee-pre, adaptive):

    draft d (γ tokens) -> DRAFT(r) ........................ wait
    EARLY(r, k_e, b_e): show provisional tokens; [pre] roll the draft back to base+k_e, append b_e,
                        draft γ more and send DRAFT(r+1, assumes=(r, k_e, b_e)) at once
    FINAL(r, k_f, b_f): commit d[:k_f] + b_f;
                        hit (pre-draft assumed exactly this): round r+1 is already being verified
                        miss / no pre-draft: roll back to base+k_f, append b_f, draft, send

Committed tokens are only ever what the target's final layer chose, so every greedy mode returns
the target's own greedy output. If the cloud stays silent past the deadline, the response is
finished by the draft alone and those tokens are marked unverified.
"""
from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from ..modeling.bundle import ModelBundle, Prompt
from .adaptive import AdaptiveController
from .draft import DraftEngine
from .link import Link
from .messages import Cancel, DraftRequest, Early, End, Error, Final, Generate, Start, Token
from .metrics import ResponseMetrics
from .modes import DecodeConfig

# on_tokens(kind, index, tokens): kind in provisional | final | rollback | unverified
TokenCallback = Callable[[str, int, list[int]], None]
# trace (optional list, for benchmark timelines): (seconds since start, "draft"|"send"|"recv", details)


class CloudError(RuntimeError):
    """The cloud answered with an ERROR message."""


@dataclass
class _Round:
    round: int
    base: int
    tokens: list[int]
    sent_at: float
    pre: bool
    early_at: float | None = None  # arrival of its first early verdict


@dataclass
class Response:
    tokens: list[int]
    text: str
    metrics: ResponseMetrics

    @property
    def verified(self) -> bool:
        return self.metrics.unverified_from is None


class SpecClient:
    def __init__(self, draft: ModelBundle, link: Link | None, config: DecodeConfig,
                 adaptive: AdaptiveController | None = None, pacer=None):
        self.bundle = draft
        self.link = link
        self.config = config
        self.engine = DraftEngine(draft, config.temperature, config.seed, config.draft_min_confidence, pacer,
                                  config.draft_top_k, config.draft_top_p)
        self.adaptive = adaptive or AdaptiveController(gamma=config.gamma)
        if config.mode != "edge" and link is None:
            raise ValueError(f"mode {config.mode} needs a link to the cloud")

    # -- public ----------------------------------------------------------------------------------
    def generate(self, prompt: Prompt, on_tokens: TokenCallback | None = None,
                 trace: list | None = None) -> Response:
        cfg = self.config
        run = _Run(self, prompt, on_tokens or (lambda *a: None), trace)
        if cfg.mode == "edge":
            run.edge_finish("edge mode")
            run.m.unverified_from, run.m.fallback_reason = 0, None
        else:
            run.open()
            mode = cfg.mode
            if mode == "adaptive":
                mode = self.adaptive.start_response()
            if mode == "cloud":
                run.cloud()
            else:
                run.speculate()
            run.close()
        return run.finish()


class _Run:
    """One response: committed tokens, the draft engine's state, the metrics."""

    def __init__(self, client: SpecClient, prompt: Prompt, emit: TokenCallback, trace: list | None = None):
        self.c, self.cfg, self.emit, self.trace = client, client.config, emit, trace
        self.prompt = prompt
        self.committed: list[int] = list(prompt.input_ids)
        self.m = ResponseMetrics(client.config.mode)
        self.t0 = time.perf_counter()
        self.session = uuid.uuid4().hex[:12]
        self.rounds = itertools.count()
        self.done = False
        self.bundle = client.bundle
        client.engine.seq = None  # never draft on the previous response's cache (edge mode, fallback)

    # -- bookkeeping -----------------------------------------------------------------------------
    @property
    def generated(self) -> list[int]:
        return self.committed[len(self.prompt.input_ids):]

    def commit(self, new: list[int], kind: str = "final") -> None:
        """Append final tokens, cut at EOS / max tokens / stop string, and emit them."""
        index = len(self.generated)
        room = self.cfg.max_new_tokens - index
        new = new[:room]
        for i, tok in enumerate(new):
            if tok in self.bundle.eos_ids:
                new = new[: i + 1]
                self.done = True
                break
        if self.cfg.stop:
            for i in range(len(new)):
                text = self.bundle.decode(self.generated + new[: i + 1])
                if any(s in text for s in self.cfg.stop):
                    new, self.done = new[: i + 1], True
                    break
        self.committed += new
        if len(self.generated) >= self.cfg.max_new_tokens:
            self.done = True
        if new:
            if self.m.ttft_s is None:
                self.m.ttft_s = time.perf_counter() - self.t0
            self.emit(kind, index, new)

    def note(self, event: str, **details) -> None:
        if self.trace is not None:
            self.trace.append((time.perf_counter() - self.t0, event, details))

    def recv(self) -> object | None:
        msg = self.c.link.recv(self.cfg.deadline_s)
        self.note("recv", msg=msg)
        if isinstance(msg, Error) and msg.session in (None, self.session):
            raise CloudError(f"{msg.code}: {msg.text}")
        return msg

    def finish(self) -> Response:
        self.m.tokens = len(self.generated)
        self.m.ttc_s = time.perf_counter() - self.t0
        return Response(self.generated, self.bundle.decode(self.generated), self.m)

    def sync_draft(self, tokens: list[int]) -> None:
        """Make the draft's sequence equal `tokens`: crop to the common prefix, append the rest."""
        eng = self.c.engine
        n = 0
        for a, b in zip(eng.tokens, tokens):
            if a != b:
                break
            n += 1
        eng.rollback(n)
        for t in tokens[n:]:
            eng.append(t)

    # -- link session ----------------------------------------------------------------------------
    def open(self) -> None:
        p = self.prompt
        self.c.link.send(Start(self.session, list(p.input_ids), p.image, self.cfg.temperature, self.cfg.seed))

    def close(self) -> None:
        self.c.link.send(End(self.session))

    # -- edge ------------------------------------------------------------------------------------
    def edge_finish(self, reason: str) -> None:
        """Finish with the draft alone (edge mode, or the fallback when the cloud is gone)."""
        eng = self.c.engine
        if eng.seq is None:
            eng.prefill(self.prompt)
        self.sync_draft(self.committed)
        self.m.unverified_from, self.m.fallback_reason = len(self.generated), reason
        while not self.done:
            d = eng.draft(1)
            self.m.draft_s += d.seconds
            self.commit(d.tokens, "unverified")

    # -- cloud decoding --------------------------------------------------------------------------
    def cloud(self) -> None:
        link, rnd, start = self.c.link, next(self.rounds), len(self.committed)
        link.send(Generate(self.session, rnd, start, self.cfg.max_new_tokens - len(self.generated),
                           sorted(self.bundle.eos_ids)))
        while not self.done:
            msg = self.recv()
            if msg is None:
                self.edge_finish("cloud deadline missed")
                return
            if isinstance(msg, Token) and msg.session == self.session and msg.round == rnd \
                    and msg.index == len(self.committed) - start:
                self.m.target_compute_s += msg.compute_s
                self.c.adaptive.observe_step(msg.compute_s)
                self.commit([msg.token])
        link.send(Cancel(self.session))

    # -- speculation -----------------------------------------------------------------------------
    def speculate(self) -> None:
        cfg, eng, link, ad = self.cfg, self.c.engine, self.c.link, self.c.adaptive
        eng.prefill(self.prompt)
        exit_layers = cfg.wire_exit_layers
        threshold = cfg.exit_threshold

        def send_draft(assumes=None) -> _Round:
            gamma = ad.gamma if cfg.mode == "adaptive" else cfg.gamma
            provisional = assumes[1] + 1 if assumes else 0  # tokens a pre-draft already builds on
            gamma = min(gamma, cfg.max_new_tokens - len(self.generated) - provisional)
            base = len(eng.tokens)
            self.note("draft", pre=assumes is not None)
            d_tokens, probs, support = [], None, None
            if gamma > 0:
                d = eng.draft(gamma)
                self.m.draft_s += d.seconds
                ad.observe_draft(d.seconds, len(d.tokens))
                d_tokens, probs, support = d.tokens, d.probs, d.support
            rnd = next(self.rounds)
            link.send(DraftRequest(self.session, rnd, base, d_tokens, probs, assumes, exit_layers,
                                   ad.threshold if cfg.mode == "adaptive" else threshold, support))
            self.m.gamma_used.append(len(d_tokens))
            self.note("send", round=rnd, tokens=len(d_tokens), pre=assumes is not None)
            return _Round(rnd, base, d_tokens, time.perf_counter(), assumes is not None)

        cur = send_draft()
        pre = None   # (assumes, round tuple) of the pre-draft in flight
        last_final_at = None
        while not self.done:
            rnd, base, d_tokens = cur.round, cur.base, cur.tokens
            msg = self.recv()
            if msg is None:
                self.edge_finish("cloud deadline missed")
                return
            if getattr(msg, "session", None) != self.session or getattr(msg, "round", None) != rnd:
                continue  # stale, duplicate or for a dropped pre-draft
            if isinstance(msg, Early):
                self.m.early_messages += 1
                cur.early_at = cur.early_at or time.perf_counter()
                self.emit("provisional", len(self.generated), d_tokens[: msg.accepted] + [msg.next_token])
                if cfg.predraft and pre is None and (cfg.mode != "adaptive" or ad.use_predraft) \
                        and not self._would_finish(d_tokens[: msg.accepted] + [msg.next_token]):
                    self.sync_draft(self.committed + d_tokens[: msg.accepted] + [msg.next_token])
                    assumes = (rnd, msg.accepted, msg.next_token)
                    pre = (assumes, send_draft(assumes))
                    self.m.predrafts += 1
            elif isinstance(msg, Final):
                k, b = msg.accepted, msg.next_token
                self.m.rounds += 1
                self.m.drafted += len(d_tokens)
                self.m.accepted += k
                self.m.target_compute_s += msg.compute_s
                for layer, ek, eb in msg.exits:
                    self.m.exit_total[layer] += 1
                    self.m.exit_agree[layer] += int((ek, eb) == (k, b))
                now = time.perf_counter()
                if last_final_at is not None:
                    ad.observe_interval(now - last_final_at, k + 1)
                last_final_at = now
                first_or_pre = cur.pre or rnd == 0  # a first round also waits for the prefill
                ad.observe_round(len(d_tokens), k, msg.compute_s, msg.tokens_in_pass,
                                 None if first_or_pre else now - cur.sent_at - msg.compute_s,
                                 now - cur.early_at if cur.early_at else None)
                if pre is not None and pre[0] != (rnd, k, b):
                    self.emit("rollback", len(self.generated), [])
                self.commit(d_tokens[:k] + [b])
                if self.done:
                    break
                hit = pre is not None and pre[0] == (rnd, k, b)
                if pre is not None:
                    self.m.hits += int(hit)
                    ad.observe_predraft(hit)
                if cfg.mode == "adaptive" and ad.choose_mode() == "cloud":
                    # a queued pre-draft may already be verified: Generate's base makes the cloud drop it
                    self.m.switched_to_cloud_at = len(self.generated)
                    self.cloud()
                    return
                if hit:
                    cur, pre = pre[1], None
                    continue
                pre = None
                self.sync_draft(self.committed)
                cur = send_draft()

    def _would_finish(self, new: list[int]) -> bool:
        return any(t in self.bundle.eos_ids for t in new) or \
            len(self.generated) + len(new) >= self.cfg.max_new_tokens
