"""The robot's side of speculative rounds, without I/O: events in, actions out.

One round, as it reads below:

    draft n tokens after the committed ones ................ Draft(n)  -> the driver drafts, sends DRAFT(r)
        reusing answers: a recent answer continuing them .... Draft(n, lookup=m): up to m more tokens,
        proposes what follows, for free                       the answer's, in the same DRAFT
    EARLY(r, k_e, b_e) from an exit the policy trusts ....... Show(k_e, b_e): provisional tokens
        at its confidence
        pre-drafting: draft on that verdict at once ......... Draft(n', assumes=(r, k_e, b_e)), sent at
                                                              once (the cloud queues it behind round r)
        fan-out: also on the exit's other likely verdicts ... Draft(..., also=(Draft(assumes=alt), ...)):
        while the FINAL is far enough off                     the branches the time allows, in one DRAFT
    EARLY from an exit not trusted, but the policy .......... the same Draft, no Show (an unshown
        expects a pre-draft on it to pay                      pre-draft: its miss shows nothing)
    FINAL(r, k, b) .......................................... [RollBack: pre-drafted, and what was shown differs]
                                                              Commit(k, b): d[:k] + b is final; each
                                                              exit's verdict, labelled, goes to the policy
    after the commit: finished .............................. nothing
                      the policy prefers cloud decoding ..... Cloud
                      a pre-draft branch assumed (r, k, b) .. wait for round r+1, already under way
                      otherwise ............................. Draft(n) again
    no word from the cloud by the deadline .................. EdgeFinish: the draft alone, unverified

Committed tokens are only ever the final layer's choice, so every greedy mode returns the target's
own tokens. The driver owns the tokens and the clock: `SpecClient` (decoding/client.py) drives
this core with the real draft engine over a `Link`; `bench/profile_sim.py` drives the same core in
simulated time, so the simulator predicts the protocol the client runs. A `Policy` supplies the
draft length, the exit threshold, which early verdicts to trust, whether to pre-draft and when to
leave for cloud decoding: fixed for a `DecodeConfig` (`FixedPolicy`), or learnt online
(`AdaptiveController`, with exit thresholds calibrated by decoding/calibration.py).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .metrics import ResponseMetrics
from .modes import DecodeConfig


@dataclass(frozen=True)
class Verdict:
    """What the target says of round `round`: its first `accepted` draft tokens, then `next_token`."""
    round: int
    accepted: int
    next_token: int


# -- actions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draft:
    """Draft `n` tokens after the committed ones (and after `assumes`' provisional tokens), then
    report them with `Rounds.drafted`; `send`: False holds a pre-draft until its verdict is final.
    `lookup` > 0: where a recent answer continues the drafted tokens, up to `lookup` more of its
    tokens go with them (decoding/reuse.py; reported as `reused`).
    Fan-out: `also` holds the further branches of a pre-draft, each on another verdict, likeliest
    first; the driver drafts them after this one while its clock is before `until` (None: no time
    is known to be free), each reported to `Rounds.drafted`, and sends them all in one DRAFT."""
    n: int
    assumes: Verdict | None = None
    send: bool = True
    lookup: int = 0
    also: tuple["Draft", ...] = ()
    until: float | None = None


@dataclass(frozen=True)
class Show:
    """Provisional tokens: the round's first `accepted` draft tokens and `next_token`."""
    verdict: Verdict


@dataclass(frozen=True)
class RollBack:
    """The provisional tokens shown are withdrawn: the final verdict differs from the early one."""


@dataclass(frozen=True)
class Commit:
    """The round's first `accepted` draft tokens and `next_token` are final; then `Rounds.committed`."""
    verdict: Verdict


@dataclass(frozen=True)
class Send:
    """Send the held pre-draft `round` (client-only pre-drafting: its verdict is now final)."""
    round: int


@dataclass(frozen=True)
class Cloud:
    """Leave speculation: the target decodes alone from here (GENERATE, one TOKEN per step)."""


@dataclass(frozen=True)
class EdgeFinish:
    """Finish the response with the draft alone; its tokens are unverified."""
    reason: str


Action = Draft | Show | RollBack | Commit | Send | Cloud | EdgeFinish


# -- policies ----------------------------------------------------------------------------------------
class Policy(Protocol):
    gamma: int
    threshold: float
    early_verdicts: bool

    @property
    def predraft(self) -> bool: ...

    def start_response(self) -> str: ...

    def choose_mode(self) -> str: ...

    def observe_draft(self, seconds: float, tokens: int) -> None: ...

    def observe_round(self, drafted: int, accepted: int, compute_s: float, tokens_in_pass: int,
                      rtt_s: float | None, early_lead_s: float | None = None) -> None: ...

    def observe_interval(self, seconds: float, tokens: int) -> None: ...

    def observe_step(self, compute_s: float) -> None: ...

    def observe_predraft(self, hit: bool) -> None: ...

    def trusts(self, layer: int | None, confidence: float) -> bool: ...

    def predrafts_on(self, layer: int | None, confidence: float) -> bool: ...

    def observe_exit(self, layer: int | None, confidence: float, missed: bool) -> None: ...


class FixedPolicy:
    """A `DecodeConfig`'s mode and settings, the same for every round: it learns nothing."""

    def __init__(self, config: DecodeConfig):
        self.mode = "cloud" if config.mode == "cloud" else "spec"
        self.gamma, self.threshold = config.gamma, config.exit_threshold
        self.early_verdicts, self.predraft = config.early_verdicts, config.predraft

    def start_response(self) -> str:
        return self.mode

    def choose_mode(self) -> str:
        return self.mode

    def observe_draft(self, seconds: float, tokens: int) -> None:
        """Nothing to learn (so are the other observations)."""

    def observe_round(self, *args) -> None:
        pass

    def observe_interval(self, seconds: float, tokens: int) -> None:
        pass

    def observe_step(self, compute_s: float) -> None:
        pass

    def observe_predraft(self, hit: bool) -> None:
        pass

    def trusts(self, layer: int | None, confidence: float) -> bool:
        """The cloud sends only verdicts at or above the threshold: each one that comes is trusted."""
        return confidence >= self.threshold

    def predrafts_on(self, layer: int | None, confidence: float) -> bool:
        """Pre-drafts only on what it trusts (the paper's method)."""
        return False

    def observe_exit(self, layer: int | None, confidence: float, missed: bool) -> None:
        pass


# -- the core ----------------------------------------------------------------------------------------
@dataclass
class Round:
    """A drafted round: `payload` is the driver's (the tokens, or the simulator's request)."""
    number: int
    drafted: int
    pre: bool                       # a pre-draft (it assumes a verdict)
    assumes: Verdict | None
    sent_at: float
    payload: Any = None
    early_at: float | None = None   # when its first EARLY arrived
    reused: int = 0                 # of `drafted`, the last ones a recent answer proposed
    earlies: list = field(default_factory=list)  # (Verdict, trusted) of each EARLY
    shown: Verdict | None = None    # the last early verdict shown as provisional tokens
    rank: int = 0                   # a fan-out pre-draft's branch: 0 on the exit's verdict, 1.. on its alternatives


class FinalDue:
    """When a FINAL is due after its EARLY, learnt across responses: the free time a fan-out
    pre-draft may spend on further branches. A DRAFT must be on the cloud when the FINAL it waits
    for is made, so its branches must leave by the EARLY's arrival + (FINAL - EARLY lead) - round
    trip. Nothing is known before the first rounds: then the first branch only."""

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self.lead_s: float | None = None    # EARLY to FINAL, at the robot
        self.rtt_s: float | None = None     # a DRAFT's round trip beyond the cloud's compute

    def _add(self, old: float | None, x: float) -> float:
        return x if old is None else old + self.alpha * (x - old)

    def observe(self, lead_s: float | None, rtt_s: float | None) -> None:
        if lead_s is not None:
            self.lead_s = self._add(self.lead_s, max(lead_s, 0.0))
        if rtt_s is not None:
            self.rtt_s = self._add(self.rtt_s, max(rtt_s, 0.0))

    def until(self, early_at: float) -> float | None:
        """The time by which a pre-draft made on an EARLY that arrived at `early_at` must leave."""
        if self.lead_s is None or self.rtt_s is None:
            return None
        return early_at + self.lead_s - self.rtt_s


class Rounds:
    """One response's protocol state. Times are the driver's clock, given with each event.

    `server_queue`: a pre-draft is sent at once and waits on the cloud behind the round it assumes
    (this project's protocol); False keeps it on the robot until that round's FINAL confirms it (the
    paper's client-only pre-drafting; the simulator compares the two). `lookup`: the most tokens a
    recent answer may add to a round (0: no reuse). `branches` > 1: fan-out pre-drafting, up to that
    many branches on an EARLY (its verdict and its alternatives) while `due` says the FINAL is far."""

    def __init__(self, policy: Policy, max_new_tokens: int, metrics: ResponseMetrics,
                 server_queue: bool = True, lookup: int = 0, branches: int = 1, due: FinalDue | None = None):
        self.policy, self.max_new, self.m, self.server_queue = policy, max_new_tokens, metrics, server_queue
        self.lookup, self.branches = lookup, branches
        self.due = due if due is not None else FinalDue()
        self.numbers = itertools.count()
        self.generated = 0
        self.cur: Round | None = None      # the round whose verdict the robot waits for
        self.pre: list[Round] = []         # the pre-draft made on cur's early verdict: its branches
        self.last_final_at: float | None = None
        self._verdict: Verdict | None = None  # the FINAL being committed

    # -- the start, and drafting ------------------------------------------------------------------
    def start(self) -> list[Action]:
        """The first action of a response: its first round, or cloud decoding."""
        return [Cloud()] if self.policy.start_response() == "cloud" else [self._draft()]

    def _draft(self, assumes: Verdict | None = None) -> Draft:
        provisional = assumes.accepted + 1 if assumes else 0  # tokens a pre-draft already builds on
        room = self.max_new - self.generated - provisional
        n = max(0, min(self.policy.gamma, room))
        return Draft(n, assumes, send=assumes is None or self.server_queue, lookup=max(0, min(self.lookup, room - n)))

    def drafted(self, action: Draft, tokens: int, seconds: float, ready_at: float, payload: Any = None,
                reused: int = 0) -> Round:
        """The driver drafted `tokens` tokens for `action` in `seconds`, the last `reused` of them
        from a recent answer; they leave at `ready_at` (unless held). The returned round's number
        goes into its DRAFT."""
        if action.n > 0:
            self.policy.observe_draft(seconds, tokens - reused)
        rank = len(self.pre) if action.assumes is not None else 0   # a further branch of the pre-draft
        number = self.pre[0].number if rank else next(self.numbers)
        rnd = Round(number, tokens, action.assumes is not None, action.assumes, ready_at, payload,
                    reused=reused, rank=rank)
        self.m.reused_rounds += int(reused > 0)
        if rnd.pre:
            self.pre.append(rnd)
            self.m.predrafts += int(rank == 0)
            self.m.branches_sent[rank] += 1
        else:
            self.cur = rnd
        if not rank:
            self.m.gamma_used.append(tokens)
        return rnd

    def next_number(self) -> int:
        """A round number for a GENERATE (cloud decoding takes one too)."""
        return next(self.numbers)

    # -- verdicts ---------------------------------------------------------------------------------
    def early(self, v: Verdict, at: float, finishes: bool, layer: int | None = None,
              confidence: float = 1.0, alternatives: tuple[Verdict, ...] = ()) -> list[Action]:
        """An EARLY of exit `layer` at `confidence` for the round in flight; `finishes`: its provisional
        tokens would end the response (nothing to pre-draft then). One the policy does not trust is
        only kept, for the metrics. `alternatives`: the exit's other likely verdicts, likeliest first
        (those that would end the response left out), for fan-out."""
        cur = self.cur
        if cur is None or v.round != cur.number:
            return []                                   # stale, or for a dropped pre-draft
        self.m.early_messages += 1
        trusted = self.policy.trusts(layer, confidence)
        cur.earlies.append((v, trusted))
        if not trusted and (self.pre or finishes or not self.policy.predrafts_on(layer, confidence)):
            return []
        cur.early_at = cur.early_at or at
        actions: list[Action] = []
        if trusted:
            cur.shown = v
            actions.append(Show(v))
        else:
            self.m.predrafts_unshown += 1   # on a verdict not trusted to be shown: nobody sees it
        if self.policy.predraft and not self.pre and not finishes:
            draft = self._draft(assumes=v)
            others = [a for a in dict.fromkeys(alternatives) if a != v and a.round == v.round][: self.branches - 1]
            if others:
                draft = replace(draft, also=tuple(self._draft(assumes=a) for a in others), until=self.due.until(at))
            actions.append(draft)
        return actions

    def final(self, v: Verdict, at: float, compute_s: float, tokens_in_pass: int,
              exits: list[tuple[Any, int, int]] = (), exit_confidences: list[float] = ()) -> list[Action]:
        """The FINAL of the round in flight: what to commit (then call `committed`). `exits` (each
        exit's verdict) with `exit_confidences` label the exits for the policy, EARLY sent or not."""
        cur, m, policy = self.cur, self.m, self.policy
        if cur is None or v.round != cur.number:
            return []
        m.rounds += 1
        m.drafted += cur.drafted
        m.accepted += v.accepted
        drafted = cur.drafted - cur.reused          # by the draft model
        m.reused_drafted += cur.reused
        m.reused_accepted += max(0, v.accepted - drafted)
        m.target_compute_s += compute_s
        for layer, ek, eb in exits:
            m.exit_total[layer] += 1
            m.exit_agree[layer] += int((ek, eb) == (v.accepted, v.next_token))
        for (layer, ek, eb), confidence in zip(exits, exit_confidences):
            policy.observe_exit(layer, confidence, (ek, eb) != (v.accepted, v.next_token))
        for ev, trusted in cur.earlies:
            m.early_trusted += trusted
            m.early_trusted_missed += trusted and (ev.accepted, ev.next_token) != (v.accepted, v.next_token)
        if self.last_final_at is not None:
            policy.observe_interval(at - self.last_final_at, v.accepted + 1)
        self.last_final_at = at
        first_or_pre = cur.pre or cur.number == 0  # a first round also waits for the prefill
        rtt = None if first_or_pre else at - cur.sent_at - compute_s
        lead = at - cur.early_at if cur.early_at is not None else None
        # the policy learns the draft model's acceptance: a reused answer's tokens say nothing of it
        policy.observe_round(drafted, min(v.accepted, drafted), compute_s, tokens_in_pass, rtt, lead)
        self.due.observe(lead, rtt)
        self._verdict = v
        # a pre-draft went up on an early verdict, and what was shown (an exit's verdict) is wrong
        missed = bool(self.pre) and cur.shown is not None and cur.shown != v
        return [RollBack(), Commit(v)] if missed else [Commit(v)]

    def committed(self, generated: int, done: bool) -> list[Action]:
        """After the driver committed the FINAL's tokens (`generated` in all): the next step."""
        self.generated = generated
        if done:
            return []
        pre, self.pre = self.pre, []
        hit = next((b for b in pre if b.assumes == self._verdict), None)
        if pre:
            self.m.hits += int(hit is not None)
            if hit is not None:
                self.m.branch_hits[hit.rank] += 1
            self.policy.observe_predraft(hit is not None)
        if self.policy.choose_mode() == "cloud":
            # a queued pre-draft may already be verified: GENERATE's base makes the cloud drop it
            self.m.switched_to_cloud_at = generated
            return [Cloud()]
        if hit is not None:
            self.cur = hit
            return [] if self.server_queue else [Send(hit.number)]
        return [self._draft()]

    def token(self, compute_s: float) -> None:
        """A TOKEN of cloud decoding (the driver commits it)."""
        self.m.target_compute_s += compute_s
        self.policy.observe_step(compute_s)

    @staticmethod
    def timeout() -> list[Action]:
        """No word from the cloud by the deadline."""
        return [EdgeFinish("cloud deadline missed")]

    @staticmethod
    def refused(code: str, text: str) -> list[Action]:
        """The cloud answered this response's request with an ERROR (a request it will not serve, a
        session it no longer holds): the robot finishes alone, saying why, rather than failing."""
        return [EdgeFinish(f"cloud refused: {code}: {text}")]
