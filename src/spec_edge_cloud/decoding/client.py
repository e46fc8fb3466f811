"""The robot's side of one response, in every mode, over any `Link`.

`SpecClient.generate` runs a response: edge mode drafts alone; every other mode opens a session on
the cloud and drives the protocol core of decoding/rounds.py (where one round reads top to bottom)
with the real draft engine: it drafts and sends what the core asks for, turns the cloud's EARLY and
FINAL into the core's events, and applies its commits, roll-backs and switches. If the cloud stays
silent past the deadline, or refuses a request with an ERROR, the response is finished by the draft
alone and those tokens are marked unverified (`fallback_reason` says why).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable

import torch

from ..modeling.bundle import ModelBundle, Prompt
from .adaptive import AdaptiveController
from .draft import DraftEngine, point_mass
from .link import Link
from .messages import Branch, Cancel, DraftRequest, Early, End, Error, Final, Generate, Start, Token
from .metrics import ResponseMetrics
from .modes import DecodeConfig
from .reuse import AnswerMemory
from .rounds import (Cloud, Commit, Draft, EdgeFinish, FinalDue, FixedPolicy, Policy, RollBack, Round, Rounds, Show,
                     Verdict)

# on_tokens(kind, index, tokens): kind in provisional | final | rollback | unverified
TokenCallback = Callable[[str, int, list[int]], None]
# grammar(words of the answer so far) -> the one word it allows next, or None (control.actions.forced_next)
Grammar = Callable[[list[str]], str | None]
# trace (optional list, for benchmark timelines): (seconds since start, "draft"|"send"|"recv", details)


def with_point_masses(tokens: list[int], probs: torch.Tensor, support: list[list[int]] | None
                      ) -> tuple[torch.Tensor, list[list[int]] | None]:
    """The drafted rows `probs` (over `support`, or the vocabulary) followed by a point-mass row for
    each of `tokens` in the same form: a reused answer's token is proposed with certainty, q = 1
    (decoding/draft.py's `point_mass`; decoding/reuse.py)."""
    made = [point_mass(t, probs.shape[1], support is not None) for t in tokens]
    rows = torch.stack([row for row, _ in made]).to(probs.dtype)
    return torch.cat([probs, rows]), None if support is None else support + [ids for _, ids in made]


def triple(v: Verdict) -> tuple[int, int, int]:
    """A verdict as a DRAFT's `assumes`."""
    return v.round, v.accepted, v.next_token


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
                 adaptive: AdaptiveController | None = None, pacer=None, memory: AnswerMemory | None = None,
                 grammar: Grammar | None = None, due: FinalDue | None = None):
        """`memory`: the recent answers to draft from when `config.answers_reused` > 0 (default: the
        client's own; pass one to share it across clients, as the draft node does per response).
        `grammar`: the answer's grammar, whose forced tokens are drafted without a draft step when
        `config.draft_grammar` is on, or auto in adaptive (decoding sits below control: the caller hands
        it in; auto without one drafts every token).
        `due`: when FINALs come after their EARLYs, learnt for fan-out pre-drafting (shared like `memory`)."""
        self.bundle = draft
        self.link = link
        self.config = config
        self.engine = DraftEngine(draft, config.temperature, config.seed, config.draft_min_confidence, pacer,
                                  config.draft_top_k, config.draft_top_p)
        self.policy: Policy = (adaptive or AdaptiveController.for_config(config)) if config.mode == "adaptive" \
            else FixedPolicy(config)
        if config.mode != "edge" and link is None:
            raise ValueError(f"mode {config.mode} needs a link to the cloud")
        self.memory = None if not config.answers_reused or config.mode in ("edge", "cloud") else \
            memory or AnswerMemory(config.answers_reused)
        self.due = due if due is not None else FinalDue()
        self._sentence_ends: dict[int, bool] = {}
        if config.draft_grammar == "on" and grammar is None and config.mode not in ("edge", "cloud"):
            raise ValueError("draft_grammar needs the answer's grammar (control.actions.forced_next)")
        self.grammar = grammar if config.grammar_wanted else None
        self._words: dict[int, str] = {}
        self._ids: dict[str, int | None] = {}

    def word(self, token: int) -> str:
        if token not in self._words:
            self._words[token] = self.bundle.words([token])[0]
        return self._words[token]

    def token_of(self, word: str) -> int | None:
        """The one token that is `word` (None where the tokenizer splits it, or spells it otherwise)."""
        if word not in self._ids:
            ids = self.bundle.tokenizer.encode(word, add_special_tokens=False)
            self._ids[word] = ids[0] if len(ids) == 1 and self.word(ids[0]) == word else None
        return self._ids[word]

    def sentence_end(self, token: int) -> bool:
        """Whether `token` ends a sentence of the action language (".") or the answer."""
        if token not in self._sentence_ends:
            self._sentence_ends[token] = token in self.bundle.eos_ids or \
                self.bundle.decode([token]).strip().endswith(".")
        return self._sentence_ends[token]

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
            run.speculate(Rounds(self.policy, cfg.max_new_tokens, run.m,
                                 lookup=cfg.reuse_max_tokens if self.memory else 0,
                                 branches=cfg.predraft_branches, due=self.due))
            run.close()
        response = run.finish()
        if self.memory is not None:
            verified = response.tokens[: response.metrics.unverified_from]
            self.memory.remember(prompt.input_ids, verified, cfg.seed if cfg.temperature > 0 else None)
        return response


class _Run:
    """One response: committed tokens, the draft engine's state, the metrics."""

    def __init__(self, client: SpecClient, prompt: Prompt, emit: TokenCallback, trace: list | None = None):
        self.c, self.cfg, self.emit, self.trace = client, client.config, emit, trace
        self.prompt = prompt
        self.committed: list[int] = list(prompt.input_ids)
        self.m = ResponseMetrics(client.config.mode)
        self.t0 = time.perf_counter()
        self.session = uuid.uuid4().hex[:12]
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
        return msg

    def refused(self, msg: object) -> bool:
        """Whether `msg` is the cloud's ERROR about this response (or about no session in particular)."""
        return isinstance(msg, Error) and msg.session in (None, self.session)

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
        image = p.jpeg if p.jpeg is not None else p.image
        self.c.link.send(Start(self.session, list(p.input_ids), image, self.cfg.temperature, self.cfg.seed))

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
    def cloud(self, rounds: Rounds) -> None:
        link, rnd, start = self.c.link, rounds.next_number(), len(self.committed)
        link.send(Generate(self.session, rnd, start, self.cfg.max_new_tokens - len(self.generated),
                           sorted(self.bundle.eos_ids)))
        while not self.done:
            msg = self.recv()
            if msg is None or self.refused(msg):
                finish = rounds.timeout() if msg is None else rounds.refused(msg.code, msg.text)
                self.edge_finish(finish[0].reason)
                return
            if isinstance(msg, Token) and msg.session == self.session and msg.round == rnd \
                    and msg.index == len(self.committed) - start:
                rounds.token(msg.compute_s)
                self.commit([msg.token])
        link.send(Cancel(self.session))

    # -- speculation -----------------------------------------------------------------------------
    def speculate(self, rounds: Rounds) -> None:
        """Drive the protocol core (decoding/rounds.py) with the draft engine and the link. A Show or
        Commit is of the round in flight (`rounds.cur`, the branch verified for a fan-out pre-draft)."""
        actions = rounds.start()
        while not self.done:
            if not actions:
                actions = self.wait(rounds)   # [] for a message that changes nothing
                continue
            action, actions = actions[0], actions[1:]
            if isinstance(action, Draft):
                self.draft_and_send(rounds, action)
            elif isinstance(action, Show):
                v = action.verdict
                self.emit("provisional", len(self.generated), rounds.cur.payload[:v.accepted] + [v.next_token])
            elif isinstance(action, RollBack):
                self.emit("rollback", len(self.generated), [])
            elif isinstance(action, Commit):
                v = action.verdict
                self.commit(rounds.cur.payload[:v.accepted] + [v.next_token])
                actions += rounds.committed(len(self.generated), self.done)
            elif isinstance(action, Cloud):
                self.cloud(rounds)
                return
            elif isinstance(action, EdgeFinish):
                self.edge_finish(action.reason)
                return

    def draft_and_send(self, rounds: Rounds, action: Draft) -> None:
        """Draft the round `action` asks for, and a fan-out pre-draft's further branches while the
        time allows (`action.until`: each must be done before it), and send them in one DRAFT."""
        t0, forced = time.perf_counter(), self.m.grammar_forced
        first = self.draft_branch(rounds, action)
        forced = self.m.grammar_forced - forced     # of the first branch, proposed by the grammar
        rnd, base, tokens, probs, support = first
        branches = [first]
        for more in action.also:
            now = time.perf_counter()
            if action.until is None or now + (now - t0) / len(branches) > action.until:
                break  # the next branch would not be on the cloud before the FINAL it waits for
            branches.append(self.draft_branch(rounds, more))
        v = action.assumes
        alternatives = rounds.branches - 1 if self.cfg.predraft else 0
        self.c.link.send(DraftRequest(self.session, rnd.number, base, tokens, probs,
                                      triple(v) if v else None, self.cfg.wire_exit_layers,
                                      rounds.policy.threshold, support,
                                      [Branch(triple(b[0].assumes), *b[1:]) for b in branches[1:]], alternatives))
        sent = time.perf_counter()
        for b in branches:
            b[0].sent_at = sent
        self.note("send", round=rnd.number, tokens=len(tokens), pre=v is not None, branches=len(branches),
                  reused=rnd.reused, forced=forced)

    def draft_branch(self, rounds: Rounds, action: Draft) -> tuple:
        """Draft `action.n` tokens from the committed ones (and the assumed verdict's):
        (round, base, tokens, probs, support)."""
        eng, v = self.c.engine, action.assumes
        if eng.seq is None:
            eng.prefill(self.prompt)
        else:
            assumed = rounds.cur.payload[:v.accepted] + [v.next_token] if v is not None else []
            self.sync_draft(self.committed + assumed)
        base = len(eng.tokens)
        self.note("draft", pre=v is not None)
        d_tokens, probs, support, seconds = [], None, None, 0.0
        if action.n > 0:
            d = eng.draft(action.n, self.forced if self.c.grammar is not None else None)
            self.m.draft_s += d.seconds
            self.m.grammar_forced += d.forced
            d_tokens, probs, support, seconds = d.tokens, d.probs, d.support, d.seconds
        reused = self.reused(action.lookup, eng.tokens, len(d_tokens))
        if reused and probs is not None:
            probs, support = with_point_masses(reused, probs, support)
        d_tokens = d_tokens + reused
        rnd = rounds.drafted(action, len(d_tokens), seconds, time.perf_counter(), d_tokens, len(reused))
        return rnd, base, d_tokens, probs, support

    def forced(self, tokens: list[int]) -> int | None:
        """The token the answer's grammar forces after `tokens` (prompt, answer so far, drafted), if any."""
        word = self.c.grammar([self.c.word(t) for t in tokens[len(self.prompt.input_ids):]])
        return None if word is None else self.c.token_of(word)

    def reused(self, limit: int, tokens: list[int], drafted: int) -> list[int]:
        """At most `limit` tokens that a recent answer has after `tokens` (committed, assumed and the
        `drafted` ones), if it continues all the drafted ones and one more ([]: none). Drafting first
        keeps the draft model's round whatever the lookup finds: answers to one instruction differ
        from frame to frame at their start (what is in view), where a recent answer alone guesses
        worse than the draft model."""
        memory = self.c.memory
        if memory is None or limit <= 0:
            return []
        n = len(self.prompt.input_ids)
        return memory.propose(tokens[:n], tokens[n:], limit, self.cfg.seed if self.cfg.temperature > 0 else None,
                              self.c.sentence_end, min_match=drafted + 1)

    def wait(self, rounds: Rounds) -> list:
        """The next message for the round in flight, as the core's actions."""
        msg = self.recv()
        now = time.perf_counter()
        if msg is None:
            return rounds.timeout()
        if self.refused(msg):
            return rounds.refused(msg.code, msg.text)
        if getattr(msg, "session", None) != self.session:
            return []
        if isinstance(msg, Early):
            cur = rounds.cur
            drafted = cur.payload if cur is not None and cur.number == msg.round else []
            ends = [(k, b) for k, b in [(msg.accepted, msg.next_token)] + list(msg.alternatives) if k <= len(drafted)]
            ahead = [Verdict(msg.round, k, b) for k, b in ends if not self._would_finish(drafted[:k] + [b])]
            v = Verdict(msg.round, msg.accepted, msg.next_token)
            return rounds.early(v, now, not ahead or ahead[0] != v, msg.layer, msg.confidence, tuple(ahead[1:]))
        if isinstance(msg, Final):
            return rounds.final(Verdict(msg.round, msg.accepted, msg.next_token), now, msg.compute_s,
                                msg.tokens_in_pass, msg.exits, [p / 100 for p in msg.exit_percent])
        return []

    def _would_finish(self, new: list[int]) -> bool:
        return any(t in self.bundle.eos_ids for t in new) or \
            len(self.generated) + len(new) >= self.cfg.max_new_tokens
