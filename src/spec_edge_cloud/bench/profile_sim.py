"""Profile simulator: a discrete-event model of the protocol the client runs, with the client's own core.

It predicts latency in regimes this machine cannot run (a Jetson drafting for an A100 behind a
120 ms link) from timing profiles (draft time per token, target time per layer, link delay) and
per-round traces (accepted count; whether an early verdict came and agreed with the final one),
either recorded by the replay benchmark or drawn from a Bernoulli model at a given acceptance and
agreement. Everything random comes from one seed: same seed, same predictions.

What is modelled, as the client and the verifier do it:
- robot: one thread, whose every decision is made by decoding/rounds.py, the core `SpecClient`
  drives (what to draft and when, pre-drafts, hits and misses, leaving for cloud decoding), with the
  same policies (`FixedPolicy`, the real `AdaptiveController` on the simulated measurements); only
  the tokens are counts and the time simulated. A response sends PREFILL; speculative modes prefill
  the draft and draft; messages that arrive while it drafts wait until it is done. `cloud` sends
  GENERATE and receives one TOKEN per step; `edge` drafts alone.
- link: per direction, delay RTT/2 plus jitter drawn uniformly in [-jitter/2, +jitter/2], messages
  never overtake each other, store-and-forward at the bandwidth (the link emulator's semantics).
- cloud: one GPU, requests in arrival order per robot; a pass of n tokens takes the profile's time
  for n tokens and its EARLY leaves at the exit layer's cumulative time; a pre-draft waits behind
  the round it assumes and runs the moment that round ends if the assumption held (server-side
  queue), else it is dropped (`server_queue=False`: the paper's client-only pre-drafting, where the
  pre-draft waits on the robot for the FINAL). A fan-out pre-draft (`branches` > 1) carries a
  branch per rank of the exit's verdicts (0: its own, 1.., its alternatives) that the robot had time
  to draft, and runs if the round's FINAL matched one of them (the round's `alternative`). Reused
  answers (`decode`'s reuse_answers): a round a recent answer extends carries its `reused` tokens beyond the
  drafted ones, at no drafting time, in the DRAFT's bytes and the pass. Grammar (`decode`'s
  draft_grammar): a round's tokens the answer's grammar forces take no drafting time. Exits: the
  robot trusts an EARLY by its policy (the fixed threshold, or adaptive's exits calibrated online
  from the FINALs' exit labels a recorded round carries). Several robots: round-robin one pass at a time, or with `batched`
  every runnable request of every robot joins one pass (cost: the profile at the total token
  count; beyond the largest measured pass, `extra_ms_per_token` per token more).
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..decoding.adaptive import AdaptiveController
from ..decoding.metrics import ResponseMetrics
from ..decoding.modes import DecodeConfig
from ..decoding.rounds import Cloud, Commit, Draft, FinalDue, FixedPolicy, Policy, Rounds, Send, Verdict
from ..decoding.timing import TimingProfile
from .summary import ResponseRecord


# -- rounds: what the target says of each draft ------------------------------------------------------
@dataclass(frozen=True)
class Round:
    drafted: int
    accepted: int
    early: bool = True              # an EARLY was sent (an exit was confident enough)
    agreed: bool = True             # ... and equal to the FINAL: a pre-draft on it hits
    exit_fraction: float | None = None   # where in the depth the EARLY left (None: the regime's)
    alternative: int | None = None  # not agreed: the rank (1, 2) of the exit's alternative the FINAL is, if one
    reused: int = 0                 # of `drafted`, the last ones a recent answer proposed (decoding/reuse.py)
    forced: int = 0                 # of `drafted`, the ones the answer's grammar forced (no draft step)
    layer: int | None = None        # the EARLY's exit layer and confidence (None, 1.0: not recorded)
    confidence: float = 1.0
    labels: tuple[tuple[int, bool, float], ...] = ()   # the FINAL's exit labels: (layer, missed, confidence)

    @property
    def matched(self) -> int | None:
        """The rank of the fan-out branch this round's FINAL confirms (0: the exit's own verdict)."""
        return 0 if self.agreed else self.alternative


@dataclass(frozen=True)
class ExitConfidences:
    """One exit's confidences as a replay recorded them: those of its verdicts the FINAL confirmed
    (`right`) and of those it did not (`wrong`). How often the exit is right is the Bernoulli
    rounds' agreement; how its confidence tells right from wrong is this record's."""

    layer: int
    right: tuple[float, ...]
    wrong: tuple[float, ...]

    def __post_init__(self):
        if not self.right or not self.wrong:
            raise ValueError(f"exit {self.layer}: confidences of right and of wrong verdicts are both needed "
                             f"(got {len(self.right)} and {len(self.wrong)})")

    def draw(self, right: bool, rng: random.Random) -> float:
        return rng.choice(self.right if right else self.wrong)


class BernoulliRounds:
    """Each draft token accepted with probability `token_acceptance_prob` (the run stops at the first
    miss), so the acceptance (share of drafted tokens accepted) is lower: predict.acceptance_share;
    the early verdict agrees with the final one with probability `agreement`; when it does not, the
    final is the exit's alternative of rank i with probability `alternatives[i - 1]`. Reusing answers:
    a recent answer extends a round with probability `reuse` by `reuse_tokens` tokens (at most the
    lookup allows), each accepted with probability `reuse_token_prob` once all drafted ones were.
    Grammar: each drafted token is one the grammar forces with probability `forced`. Exit
    confidences (`confidences`): the early verdict's confidence drawn from its exit's record, among
    the verdicts as right (or as wrong) as this one, and the FINAL labels that exit with it; without,
    a round carries no confidence (a calibrated exit learns nothing from it)."""

    def __init__(self, token_acceptance_prob: float, agreement: float, rng: random.Random, early: float = 1.0,
                 alternatives: tuple[float, ...] = (), reuse: float = 0.0, reuse_tokens: int = 0,
                 reuse_token_prob: float = 0.0, forced: float = 0.0, confidences: "ExitConfidences | None" = None):
        for name, p in (("token_acceptance_prob", token_acceptance_prob), ("agreement", agreement),
                        ("early", early), ("alternatives", sum(alternatives)), ("reuse", reuse),
                        ("reuse_token_prob", reuse_token_prob), ("forced", forced)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        self.token_acceptance_prob, self.agreement, self.early, self.rng = token_acceptance_prob, agreement, early, rng
        self.alternatives = alternatives
        self.reuse, self.reuse_tokens, self.reuse_token_prob = reuse, reuse_tokens, reuse_token_prob
        self.forced_share = forced
        self.confidences = confidences

    def forced(self, n: int, ahead: int = 0) -> int:
        """Of the next round's `n` drafted tokens, those the grammar forces (drawn only when modelled)."""
        return sum(self.rng.random() < self.forced_share for _ in range(n)) if self.forced_share else 0

    def lookup(self, limit: int, ahead: int = 0) -> int:
        """The tokens a recent answer adds to the next round drafted, at most `limit`."""
        if limit <= 0 or not self.reuse or self.rng.random() >= self.reuse:  # drawn only when modelled
            return 0
        return min(self.reuse_tokens, limit)

    def next(self, gamma: int, reused: int = 0) -> Round:
        k = 0
        while k < gamma and self.rng.random() < self.token_acceptance_prob:
            k += 1
        if k == gamma:
            while k < gamma + reused and self.rng.random() < self.reuse_token_prob:
                k += 1
        early, agreed = self.rng.random() < self.early, self.rng.random() < self.agreement
        alternative = None
        if not agreed and self.alternatives:   # drawn only when modelled: predictions without stay as they were
            u, total = self.rng.random(), 0.0
            for rank, p in enumerate(self.alternatives, 1):
                total += p
                if u < total:
                    alternative = rank
                    break
        if self.confidences is None:
            return Round(gamma + reused, k, early, agreed, alternative=alternative, reused=reused)
        layer, confidence = self.confidences.layer, self.confidences.draw(agreed, self.rng)
        return Round(gamma + reused, k, early, agreed, alternative=alternative, reused=reused, layer=layer,
                     confidence=confidence, labels=((layer, not agreed, confidence),))


class RecordedRounds:
    """Rounds recorded by the replay, in order. Asked for another draft length than recorded, the
    accepted count is cut to it (shorter) or extended by `fallback` (longer, all accepted); past
    the end of the record, rounds come from `fallback`. A round a recent answer extended offers its
    reused tokens to the round drafted in its place (`lookup`), and those of them the target
    accepted count once all the drafted ones were."""

    def __init__(self, rounds: Iterable[Round], fallback: BernoulliRounds):
        self.rounds = deque(rounds)
        self.fallback = fallback

    def lookup(self, limit: int, ahead: int = 0) -> int:
        """The reused tokens of the round drafted `ahead` rounds after the next one verified."""
        if ahead >= len(self.rounds):
            return self.fallback.lookup(limit)
        return min(self.rounds[ahead].reused, max(limit, 0))

    def forced(self, n: int, ahead: int = 0) -> int:
        """The grammar's forced tokens of that round, at most `n`."""
        if ahead >= len(self.rounds):
            return self.fallback.forced(n)
        return min(self.rounds[ahead].forced, n)

    def next(self, gamma: int, reused: int = 0) -> Round:
        if not self.rounds:
            return self.fallback.next(gamma, reused)
        r = self.rounds.popleft()
        drafted = r.drafted - r.reused          # by the draft model
        k = min(r.accepted, drafted, gamma)
        if gamma > drafted and r.accepted >= drafted:
            k += self.fallback.next(gamma - drafted).accepted
        if k == gamma:
            k += min(reused, max(0, r.accepted - drafted))
        return dataclasses.replace(r, drafted=gamma + reused, accepted=k, reused=reused)


@dataclass
class Job:
    """One response: how many tokens it has, after which token the first action is complete."""
    tokens: int
    rounds: BernoulliRounds | RecordedRounds
    first_action: int | None = None
    frame: int | None = None
    repeat: int | None = None


# -- the regime ------------------------------------------------------------------------------------
@dataclass
class MessageSizes:
    """Wire bytes per message (defaults: transport/protocol frames of a 128x128 JPEG and word tokens)."""
    prefill: int = 6000
    draft_fixed: int = 90
    draft_per_token: int = 2
    branch_fixed: int = 20          # a fan-out DRAFT's further branch: its assumes and base
    generate: int = 80
    early: int = 80
    final: int = 110
    token: int = 70


@dataclass
class SimRegime:
    name: str
    profile: TimingProfile
    rtt_s: float
    jitter_s: float = 0.0
    bandwidth_bps: float | None = None
    exit_fraction: float = 0.5
    extra_ms_per_token: float = 0.1
    encode_s: float = 0.0           # robot: frame capture -> prompt ready (JPEG, image processor)
    sizes: MessageSizes = field(default_factory=MessageSizes)

    def pass_s(self, fraction: float, tokens: int) -> float:
        p = self.profile
        ms = p.target_ms(fraction, tokens)
        largest = max(p.target_cum_layer_ms) if p.target_cum_layer_ms else tokens
        if tokens > largest:
            ms += fraction * (tokens - largest) * self.extra_ms_per_token
        return ms / 1000

    @property
    def draft_s(self) -> float:
        return self.profile.draft_per_token_ms / 1000


# -- the event loop --------------------------------------------------------------------------------
class Simulation:
    def __init__(self, regime: SimRegime, seed: int = 0, batched: bool = False):
        self.regime = regime
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list = []
        self._order = itertools.count()
        self.server = _Server(self, batched)

    def at(self, t: float, fn: Callable, *args) -> None:
        heapq.heappush(self._heap, (t, next(self._order), fn, args))

    def run(self) -> None:
        while self._heap:
            self.now, _, fn, args = heapq.heappop(self._heap)
            fn(*args)


class _Wire:
    """One direction of one robot's link: delay + jitter, FIFO, store-and-forward bandwidth."""

    def __init__(self, sim: Simulation):
        self.sim, self.last, self.radio_free = sim, 0.0, 0.0

    def carry(self, t_send: float, size: int, fn: Callable, *args) -> None:
        reg = self.sim.regime
        leave = t_send
        if reg.bandwidth_bps:
            leave = self.radio_free = max(t_send, self.radio_free) + size * 8 / reg.bandwidth_bps
        delay = max(0.0, reg.rtt_s / 2 + self.sim.rng.uniform(-reg.jitter_s / 2, reg.jitter_s / 2))
        self.last = max(leave + delay, self.last)
        self.sim.at(self.last, fn, *args)


@dataclass
class _Request:
    robot: "Robot"
    kind: str                       # prefill | draft | generate
    response: int
    gamma: int = 0                  # draft: tokens drafted (of the branch verified, once chosen)
    reused: int = 0                 # ... the last of them from a recent answer
    assumes: "_Request | None" = None   # a pre-draft: runs only if that round's FINAL matches a branch
    branches: list[tuple[int, int]] = field(default_factory=list)  # each branch's (tokens, reused), by rank
    exits: bool = False             # early verdicts asked for
    remaining: int = 0              # generate: tokens still to produce
    sent: float = 0.0
    draft: Round | None = None      # the verdict, drawn when the cloud verifies the round
    number: int = 0                 # draft: its round number in the response

    def tokens(self) -> int:
        return self.gamma + 1 if self.kind == "draft" else 1


class _Server:
    def __init__(self, sim: Simulation, batched: bool):
        self.sim, self.batched = sim, batched
        self.queues: dict[Robot, deque[_Request]] = {}
        self.turns: deque[Robot] = deque()
        self.busy = False
        self.busy_s = 0.0

    def arrive(self, req: _Request) -> None:
        q = self.queues.setdefault(req.robot, deque())
        if not q and req.robot not in self.turns:
            self.turns.append(req.robot)
        q.append(req)
        self._next()

    def _head(self, robot: "Robot") -> _Request | None:
        """The robot's next runnable request; pre-drafts on a verdict that did not hold are dropped."""
        q = self.queues.get(robot)
        while q:
            req = q[0]
            if req.kind == "draft" and req.assumes is not None:
                matched = req.assumes.draft.matched
                if matched is None or matched >= len(req.branches):
                    q.popleft()
                    continue
                req.gamma, req.reused = req.branches[matched]
            if req.response != robot.response:
                q.popleft()         # left over from a finished response (the client cancelled it)
                continue
            return req
        return None

    def _next(self) -> None:
        """Start the next pass. Robots take turns: the robot whose turn it is decides. A prefill
        runs alone; otherwise, batched, every robot's runnable request that is not a prefill joins."""
        if self.busy:
            return
        self.turns = deque(r for r in self.turns if self._head(r) is not None)
        if not self.turns:
            return
        first = self._head(self.turns[0])
        self.turns.rotate(-1)
        if first.kind == "prefill" or not self.batched:
            self._run([first])
        else:
            self._run([req for r in self.turns if (req := self._head(r)).kind != "prefill"])

    def _run(self, batch: list[_Request]) -> None:
        sim, reg = self.sim, self.sim.regime
        start = sim.now
        tokens = sum(r.tokens() for r in batch)
        if batch[0].kind == "prefill":
            duration = reg.profile.target_prefill_ms / 1000
        else:
            duration = reg.pass_s(1.0, tokens)
        self.busy = True
        self.busy_s += duration
        share = duration / len(batch)
        for req in batch:
            robot = req.robot
            robot.compute_s += share
            if req.kind == "draft":
                d = req.draft = robot.job.rounds.next(req.gamma - req.reused, req.reused)
                if req.exits and d.early:
                    frac = d.exit_fraction if d.exit_fraction is not None else reg.exit_fraction
                    t_early = start + reg.pass_s(frac, tokens)
                    robot.down.carry(t_early, reg.sizes.early, robot.on_early, req)
                robot.down.carry(start + duration, reg.sizes.final, robot.on_final, req, share)
            elif req.kind == "generate":
                robot.down.carry(start + duration, reg.sizes.token, robot.on_token, req, share)
        sim.at(start + duration, self._done, batch)

    def _done(self, batch: list[_Request]) -> None:
        for req in batch:
            q = self.queues[req.robot]
            if req.kind == "generate":
                req.remaining -= 1
                if req.remaining > 0:
                    if req.robot not in self.turns:
                        self.turns.append(req.robot)
                    continue
            if q and q[0] is req:
                q.popleft()
            if q and req.robot not in self.turns:
                self.turns.append(req.robot)
        self.busy = False
        self._next()


class Robot:
    """One robot answering its jobs back to back, in one mode: the protocol core of decoding/rounds.py
    (the client's own) driven in simulated time, with counts for tokens. A round's verdict is drawn
    when the cloud verifies it; the early verdict is the final one when the draw says they agree."""

    def __init__(self, sim: Simulation, mode: str, jobs: list[Job], gamma: int = 4, max_new_tokens: int = 64,
                 start_s: float = 0.0, adaptive: AdaptiveController | None = None, server_queue: bool = True,
                 branches: int = 1, decode: dict | None = None):
        config = DecodeConfig(mode=mode, gamma=gamma, max_new_tokens=max_new_tokens,
                              **{"reuse_answers": 0, "draft_grammar": "off", **(decode or {})})
        self.branches, self.due = branches, FinalDue()   # fan-out, as the client: its FINAL timing learnt
        # reused answers, as the client: speculative modes only, up to reuse_max_tokens a round
        self.lookup = config.reuse_max_tokens if config.answers_reused and mode not in ("edge", "cloud") else 0
        self.grammar = config.grammar_wanted and mode not in ("edge", "cloud")
        self.sim, self.mode, self.jobs, self.max_new = sim, mode, deque(jobs), max_new_tokens
        self.policy: Policy = (adaptive or AdaptiveController.for_config(config)) if mode == "adaptive" \
            else FixedPolicy(config)
        self.server_queue = server_queue
        self.up, self.down = _Wire(sim), _Wire(sim)
        self.free = 0.0
        self.inbox: deque = deque()
        self.draining = False
        self.response = -1
        self.results: list[ResponseRecord] = []
        sim.at(start_s, self._begin)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _work(self, seconds: float) -> float:
        self.free = max(self.free, self.sim.now) + seconds
        return self.free

    def _send(self, t: float, size: int, req: _Request) -> None:
        self.bytes_up += size
        self.up.carry(t, size, self.sim.server.arrive, req)

    def _deliver(self, handler: Callable, *args) -> None:
        self.inbox.append((handler, args))
        if not self.draining:
            self.draining = True
            self.sim.at(max(self.sim.now, self.free), self._drain)

    def _drain(self) -> None:
        while self.inbox and self.free <= self.sim.now:
            handler, args = self.inbox.popleft()
            handler(*args)
        if self.inbox:
            self.sim.at(self.free, self._drain)
        else:
            self.draining = False

    # -- a response --------------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self.jobs:
            return
        self.job = self.jobs.popleft()
        self.response += 1
        self.t0 = self.sim.now
        self.free = max(self.free, self.t0)
        self._work(self.sim.regime.encode_s)
        self.committed = 0
        self.done = False
        self.ttfa_s: float | None = None
        self.bytes_up = self.bytes_down = 0
        self.compute_s = 0.0
        self.m = ResponseMetrics(self.mode)
        # the draft stops at the answer's end (its EOS, where it foresees it, as the shipped draft does),
        # so no round drafts past the job's tokens
        self.rounds = Rounds(self.policy, min(self.max_new, self.job.tokens), self.m, self.server_queue, self.lookup,
                             self.branches, self.due)
        self.prefilled = False       # the draft's prompt
        self.held: _Request | None = None       # a client-only pre-draft, until its verdict is final
        self.generating: _Request | None = None
        reg = self.sim.regime
        if self.mode == "edge":
            t = self._work(reg.profile.draft_prefill_ms / 1000)
            self._commit_at(t, 0)
            for _ in range(self.job.tokens):
                self._commit_at(self._work(reg.draft_s), 1)
            return
        self._send(self.free, reg.sizes.prefill, _Request(self, "prefill", self.response))
        self._act(self.rounds.start())

    def _act(self, actions: list) -> None:
        """Carry out the core's actions (tokens are counts here: nothing to show or roll back)."""
        for action in actions:
            if isinstance(action, Draft):
                self._draft(action)
            elif isinstance(action, Commit):
                self._commit_at(self.sim.now, action.verdict.accepted + 1)
                self._act(self.rounds.committed(self.committed, self.done))
            elif isinstance(action, Send):
                self._ship(self.held)
                self.held = None
            elif isinstance(action, Cloud):
                self._generate()

    def _commit_at(self, t: float, n: int) -> None:
        """n more tokens are final at time t (edge mode and the bookkeeping of the others)."""
        before = self.committed
        self.committed = min(self.job.tokens, self.committed + n)
        fa = self.job.first_action
        if fa is not None and before < fa <= self.committed:
            self.ttfa_s = t - self.t0
        if self.committed >= self.job.tokens and not self.done:
            self.done = True
            self.m.tokens = self.job.tokens
            self.results.append(ResponseRecord.from_metrics(
                self.m, ttc_s=t - self.t0, ttfa_s=self.ttfa_s, frame=self.job.frame, repeat=self.job.repeat,
                target_compute_s=self.compute_s, bytes_up=self.bytes_up, bytes_down=self.bytes_down))
            self.sim.at(t, self._begin)

    def _generate(self) -> None:
        req = _Request(self, "generate", self.response, remaining=self.job.tokens - self.committed)
        self.generating = req
        self._send(max(self.free, self.sim.now), self.sim.regime.sizes.generate, req)

    def _draft(self, action: Draft) -> None:
        """Draft a round (the robot is busy meanwhile), with a fan-out pre-draft's further branches
        while they fit before `action.until` as the client drafts them, and ship it, or hold a
        client-only pre-draft. A recent answer's tokens (`action.lookup`) and the grammar's forced
        ones cost no drafting time."""
        reg = self.sim.regime
        if not self.prefilled:
            self._work(reg.profile.draft_prefill_ms / 1000)
            self.prefilled = True
        t0 = max(self.free, self.sim.now)
        assumes = self.rounds.cur.payload if action.assumes is not None else None
        ahead = int(assumes is not None)        # a pre-draft is verified after the round in flight

        def draft(a: Draft) -> tuple[int, float]:
            """(reused tokens, drafting seconds) of a branch: the robot is busy meanwhile."""
            steps = a.n - (self.job.rounds.forced(a.n, ahead) if self.grammar else 0)
            self.m.grammar_forced += a.n - steps
            self._work(steps * reg.draft_s)
            return (self.job.rounds.lookup(a.lookup, ahead) if a.lookup else 0), steps * reg.draft_s

        u, seconds = draft(action)
        t = self.free
        req = _Request(self, "draft", self.response, action.n + u, u, assumes, exits=self.policy.early_verdicts,
                       sent=t, branches=[(action.n + u, u)])
        req.number = self.rounds.drafted(action, action.n + u, seconds, t, req, u).number
        for more in action.also:
            if action.until is None or t + (t - t0) / len(req.branches) > action.until:
                break
            u, seconds = draft(more)
            t = req.sent = self.free
            req.branches.append((more.n + u, u))
            self.rounds.drafted(more, more.n + u, seconds, t, req, u)
        if action.send:
            self._ship(req)
        else:
            self.held = req

    def _ship(self, req: _Request) -> None:
        req.sent = max(req.sent, self.sim.now)
        sizes = self.sim.regime.sizes
        branches = [n for n, _ in req.branches] or [req.gamma]
        self._send(req.sent, sizes.draft_fixed + sizes.branch_fixed * (len(branches) - 1)
                   + sizes.draft_per_token * sum(branches), req)

    # -- messages from the cloud ---------------------------------------------------------------------
    def on_early(self, req: _Request) -> None:
        self.bytes_down += self.sim.regime.sizes.early
        self._deliver(self._early, req)

    def on_final(self, req: _Request, compute_s: float) -> None:
        self.bytes_down += self.sim.regime.sizes.final
        self._deliver(self._final, req, compute_s)

    def on_token(self, req: _Request, compute_s: float) -> None:
        self.bytes_down += self.sim.regime.sizes.token
        self._deliver(self._token, req, compute_s)

    @staticmethod
    def _verdicts(req: _Request) -> tuple[Verdict, Verdict]:
        """(early, final) verdicts of a drawn round: equal when they agree (the next token stands in)."""
        d = req.draft
        return Verdict(req.number, d.accepted, 0 if d.agreed else 1), Verdict(req.number, d.accepted, 0)

    @staticmethod
    def _alternatives(req: _Request) -> tuple[Verdict, ...]:
        """The exit's two alternatives (stand-ins): the one of rank `alternative` is the final verdict."""
        d = req.draft
        return tuple(Verdict(req.number, d.accepted, 0 if d.alternative == rank else 1 + rank) for rank in (1, 2))

    def _early(self, req: _Request) -> None:
        if self.done or req.response != self.response:
            return
        early, _ = self._verdicts(req)
        finishes = self.committed + req.draft.accepted + 1 >= min(self.job.tokens, self.max_new)
        self._act(self.rounds.early(early, self.sim.now, finishes, req.draft.layer, req.draft.confidence,
                                    self._alternatives(req)))

    def _final(self, req: _Request, compute_s: float) -> None:
        if self.done or req.response != self.response or self.generating is not None:
            return
        d = req.draft
        early, final = self._verdicts(req)
        if d.labels:        # every exit's verdict (stand-in: the final one, or not) and confidence
            exits = [(layer, final.accepted, final.next_token + int(missed)) for layer, missed, _ in d.labels]
            confidences = [c for _, _, c in d.labels]
        else:
            exits, confidences = ([("exit", early.accepted, early.next_token)] if req.exits and d.early else []), []
        self._act(self.rounds.final(final, self.sim.now, compute_s, d.drafted + 1, exits, confidences))

    def _token(self, req: _Request, compute_s: float) -> None:
        if self.done or req is not self.generating:
            return
        self.rounds.token(compute_s)
        self._commit_at(self.sim.now, 1)


def simulate(regime: SimRegime, mode: str, jobs: list[Job], gamma: int = 4, max_new_tokens: int = 64,
             seed: int = 0, server_queue: bool = True, branches: int = 1,
             decode: dict | None = None) -> list[dict]:
    """One robot answering `jobs` in `mode`; per-response records (bench/summary.py schema).
    `server_queue=False` models the paper's client-only pre-drafting (a hit saves drafting time
    only: the pre-draft leaves when the FINAL confirms it); `branches` > 1 fan-out pre-drafting;
    `decode`: further DecodeConfig fields the robot follows (exit_threshold, exit_miss_target;
    reuse_answers, reuse_max_tokens: reused answers, the jobs' rounds say how many tokens; draft_grammar:
    forced tokens need no draft step). Reuse and the grammar are off unless `decode` says otherwise."""
    sim = Simulation(regime, seed)
    robot = Robot(sim, mode, jobs, gamma, max_new_tokens, server_queue=server_queue, branches=branches,
                  decode=decode)
    sim.run()
    return robot.results


def simulate_fleet(regime: SimRegime, mode: str, make_jobs: Callable[[int], list[Job]], robots: int,
                   gamma: int = 4, max_new_tokens: int = 64, seed: int = 0, batched: bool = True,
                   stagger_s: float | None = None) -> dict:
    """`robots` robots sharing one verifier GPU; robot i answers make_jobs(i) back to back, starting
    i x stagger_s in (default: one draft round apart). Returns records and GPU busy time."""
    sim = Simulation(regime, seed, batched)
    stagger = stagger_s if stagger_s is not None else gamma * regime.draft_s + regime.rtt_s / max(robots, 1)
    fleet = [Robot(sim, mode, make_jobs(i), gamma, max_new_tokens, start_s=i * stagger) for i in range(robots)]
    sim.run()
    records = [r for robot in fleet for r in robot.results]
    return {"records": records, "gpu_busy_s": sim.server.busy_s, "tokens": sum(r.tokens for r in records),
            "makespan_s": sim.now}
