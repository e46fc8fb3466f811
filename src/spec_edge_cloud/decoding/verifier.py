"""The cloud's side of the protocol for any number of robots and sessions, independent of the transport.

This is the one session layer of the cloud, and its one driver of the work. A transport (the ZeroMQ
server, or the in-process link) hands every incoming message to `submit(owner, group, msg, reply)` in
arrival order and calls `run_once()` while `busy`; `reply` puts a message on the way back at once
(EARLY leaves from inside the forward pass).

- Sessions are keyed by (owner, the robot's session id): `owner` is whatever the transport proved
  the sender to be (a connection bound to its link, or its CURVE key), so no robot can name, drive
  or read another's session, whatever id it sends. `group` is the authenticated peer the owner
  belongs to: the caps on sessions and queued work are per group; turns are per owner (the server
  caps the connections of a group, so a group gets at most that many turns a cycle).
- Rounds are idempotent: a round number is used up only when its round is verified (a DRAFT refused
  for a bad base or a pre-draft whose assumption failed leaves it free for the corrected one); a
  DRAFT repeated for a verified round gets that round's FINAL again, never a second verification.
- Pre-drafts wait in the queue behind the round they assume; a fan-out pre-draft's branches each
  assume another verdict of that round, and only the branch its FINAL matches is verified.
- Admission: at most `max_sessions` sessions, `max_sessions_per_group` per group. A full cloud
  evicts a session idle for `evictable_after_s` (with an ERROR to its owner; a session that never had
  a round after its PREFILL is idle after `UNPROVEN_S`: a robot drafts at once, a PREFILL flood does
  not) or refuses the new one with ERROR `busy`; it never takes a live session from a robot. A group with `max_queued_per_group`
  messages waiting is answered `busy` until its queue drains.
- Draining (a fleet's replica being removed, docs/fleet.md): `draining` set, the sessions it holds go
  on to their END, and a new session is answered ERROR `moved` (the server answers so the heartbeat of
  a robot without a session here too), so its robot asks the fleet's front for another replica.
- Cancelling (END, CANCEL, an evicted or departed owner) goes one way, `cancel`: the session is
  forgotten, its queued work dropped and its running stream stopped before its next pass.
- Each message becomes a generator (`steps`) that yields a `VerifyRequest` for each forward pass it
  needs and takes the `PassResult` back; the `FairScheduler` runs the passes of the owners that are
  ready together as one batched pass, a turn per owner, so no robot waits behind another's burst.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generator, Hashable

from .scheduler import FairScheduler, Work
from .messages import Cancel, DraftRequest, Early, End, Error, Final, Generate, Ping, Pong, Start, Token
from .target import ExitVerdict, PassResult, TargetEngine, TargetSequence, VerifyRequest
from .verify import dense

log = logging.getLogger(__name__)
Reply = Callable[[object], None]
Key = tuple[Hashable, str]  # (owner, the robot's session id)
UNPROVEN_S = 1.0  # a session that has had no round after its PREFILL is idle after this long (a robot drafts at once)


@dataclass
class Session:
    seq: TargetSequence
    group: Hashable
    reply: Reply                               # to its owner (an evicted session is told so)
    last_round: int = -1                       # the newest round verified
    last_final: tuple[int, int, int] | None = None  # (round, accepted, next)
    finals: deque = field(default_factory=lambda: deque(maxlen=4))  # the last FINALs, for repeated DRAFTs
    touched: float = field(default_factory=time.monotonic)
    compute_s: float = 0.0
    cancelled: bool = False


class VerifierService:
    def __init__(self, engine: TargetEngine, idle_timeout_s: float = 300.0, max_sessions: int = 64,
                 max_sessions_per_group: int | None = None, max_batch: int = 8, max_queued_per_group: int = 64,
                 evictable_after_s: float = 10.0):
        self.engine = engine
        self.sessions: dict[Key, Session] = {}
        self.idle_timeout_s = idle_timeout_s
        # a static cache holds as many sessions as it has slots
        self.max_sessions = min(max_sessions, engine.slots.slots) if engine.slots else max_sessions
        self.max_sessions_per_group = max_sessions_per_group or max_sessions
        self.max_queued_per_group = max_queued_per_group
        self.evictable_after_s = evictable_after_s
        # the passes that several owners' steps ask for run as one batched forward pass
        self.scheduler = FairScheduler(engine.verify, self._on_step_error, max_batch)
        self._queued_drafts: set[tuple] = set()  # DRAFTs waiting for their turn: an identical one is dropped
        self.draining = False                    # no new sessions: they are answered `moved`

    # -- the transport's calls -------------------------------------------------------------------
    def submit(self, owner: Hashable, group: Hashable, msg: object, reply: Reply) -> None:
        """Take one message of `owner` (in arrival order): answered, cancelled or queued at once."""
        if isinstance(msg, Ping):
            return reply(Pong(msg.sent))
        sid = getattr(msg, "session", None)
        if isinstance(msg, (End, Cancel)):
            return self.cancel(owner, sid)
        if isinstance(msg, DraftRequest):
            same = self._draft_id(owner, msg)
            s = self.sessions.get((owner, sid))
            if same in self._queued_drafts or (s is not None and self._repeat(s, msg.round, reply)):
                return  # a repeat: its FINAL is on the way, or sent again now
            if s is not None:
                s.touched = time.monotonic()  # a session with a round waiting is not idle
            self._queued_drafts.add(same)
        if self.scheduler.queued(group) >= self.max_queued_per_group:
            return reply(Error("busy", f"{self.max_queued_per_group} requests of this robot are already "
                                       "waiting: try again when they are answered", sid))
        self.scheduler.submit(Work(owner, (owner, sid), self.steps(owner, group, msg, reply), group=group))

    def run_once(self) -> bool:
        """One turn of the scheduler (a batched pass, or a pass-less step); False if there was no work."""
        return self.scheduler.run_once()

    @property
    def busy(self) -> bool:
        return self.scheduler.busy

    def cancel(self, owner: Hashable, sid: str) -> None:
        """The one way a session ends early: forgotten, queued work dropped, a running stream stopped."""
        self.scheduler.cancel(owner, (owner, sid))
        s = self.sessions.pop((owner, sid), None)
        if s is not None:
            s.cancelled = True

    def drop_owner(self, owner: Hashable) -> None:
        """An owner that went away (or whose connection was taken over): all its sessions end."""
        self.scheduler.cancel(owner)
        for key in [k for k in self.sessions if k[0] == owner]:
            self.sessions.pop(key).cancelled = True

    def holds(self, owner: Hashable) -> bool:
        """Whether `owner` has a session here."""
        return any(key[0] is owner for key in self.sessions)

    def evict_idle(self, now: float | None = None) -> list[str]:
        """End the sessions silent for `idle_timeout_s`, telling their owners; returns their ids."""
        now = time.monotonic() if now is None else now
        old = [k for k, s in self.sessions.items() if now - s.touched > self.idle_timeout_s]
        for key in old:
            self._evict(key, f"evicted after {self.idle_timeout_s:g} s idle")
        return [sid for _, sid in old]

    # -- work ------------------------------------------------------------------------------------
    def steps(self, owner: Hashable, group: Hashable, msg: object,
              reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        """One message's work: yields each forward pass it needs (one per round, one per token of cloud
        decoding) and gets its result back, so the scheduler can batch it with other robots' passes,
        or run other robots' rounds in between (and stop a cancelled stream)."""
        try:
            if isinstance(msg, Start):
                self._start(owner, group, msg, reply)
            elif isinstance(msg, DraftRequest):
                yield from self._draft(owner, msg, reply)
            elif isinstance(msg, Generate):
                yield from self._generate(owner, msg, reply)
            else:
                reply(Error("bad-message", f"unexpected message {type(msg).__name__}"))
        except ValueError as exc:
            reply(Error("bad-request", str(exc), getattr(msg, "session", None)))
        except Exception as exc:  # a fault of ours: that robot is told, the others go on
            log.exception("internal error in a %s", type(msg).__name__)
            reply(Error("internal", f"{type(exc).__name__}: {exc}", getattr(msg, "session", None)))

    @staticmethod
    def _on_step_error(work: Work, exc: Exception) -> None:
        log.error("a step failed outside its own handling: %s: %s", type(exc).__name__, exc)

    def _evict(self, key: Key, why: str) -> None:
        s = self.sessions.pop(key)
        s.cancelled = True
        self.scheduler.cancel(key[0], key)
        log.info("session %s", why)
        s.reply(Error("evicted", f"session {key[1]!r} {why}", key[1]))

    def _session(self, owner: Hashable, sid: str, reply: Reply) -> Session | None:
        s = self.sessions.get((owner, sid))
        if s is None and self.draining:
            reply(moved(sid))
        elif s is None:
            reply(Error("unknown-session", f"no session {sid!r} (evicted or never started)", sid))
        else:
            s.touched = time.monotonic()
        return s

    def _admit(self, owner: Hashable, group: Hashable, sid: str, reply: Reply) -> bool:
        """Room for a new session of `group`: its own oldest goes if the group is at its cap; a full
        cloud evicts its longest-idle session if that one is idle enough, else refuses this one."""
        now = time.monotonic()
        mine = [k for k, s in self.sessions.items() if s.group == group]
        if len(mine) >= self.max_sessions_per_group:
            self._evict(min(mine, key=lambda k: self.sessions[k].touched),
                        f"ended: a newer session of the same robot replaced it (at most "
                        f"{self.max_sessions_per_group} per robot)")
        if len(self.sessions) < self.max_sessions:
            return True
        unproven = min(UNPROVEN_S, self.evictable_after_s)
        waiting = {d[:2] for d in self._queued_drafts}  # (owner, session) with a round queued: live
        idle = [k for k, s in self.sessions.items() if k not in waiting and
                now - s.touched >= (self.evictable_after_s if s.last_round >= 0 else unproven)]
        if idle:
            key = min(idle, key=lambda k: self.sessions[k].touched)
            self._evict(key, f"evicted after {now - self.sessions[key].touched:.1f} s idle: the cloud is full")
            return True
        reply(Error("busy", f"the cloud serves its limit of {self.max_sessions} sessions, all active: "
                            "try again later", sid))
        return False

    def _start(self, owner: Hashable, group: Hashable, msg: Start, reply: Reply) -> None:
        from ..modeling.bundle import Prompt
        key = (owner, msg.session)
        old = self.sessions.pop(key, None)  # a re-sent PREFILL starts the session afresh
        if old is not None:
            old.cancelled = True
            del old  # its cache slot (static cache) goes back before the new session takes one
        elif self.draining:
            return reply(moved(msg.session))
        elif not self._admit(owner, group, msg.session, reply):
            return
        seq = self.engine.start(Prompt(list(msg.input_ids), msg.image), msg.temperature, msg.seed)
        session = Session(seq, group, reply)
        session.compute_s += seq.prefill()
        self.sessions[key] = session

    def _accept_round(self, s: Session, rnd: int, base: int) -> None:
        committed = len(s.seq.tokens)
        if base > committed:
            raise ValueError(f"round {rnd} starts at {base} but only {committed} tokens are committed")
        if base < committed:
            s.seq.seq.truncate(base)  # the robot dropped tokens (it switched plans): follow it
        s.last_round = rnd

    def _repeat(self, s: Session, rnd: int, reply: Reply) -> bool:
        """True if round `rnd` is already done: a repeated DRAFT gets its FINAL again (if still kept)."""
        if rnd > s.last_round:
            return False
        for final in s.finals:
            if final.round == rnd:
                reply(final)
        return True

    def _draft(self, owner: Hashable, msg: DraftRequest, reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        try:
            s = self._session(owner, msg.session, reply)
            if s is not None:
                yield from self._verify(s, msg, reply)
        finally:
            self._queued_drafts.discard(self._draft_id(owner, msg))

    @staticmethod
    def _draft_id(owner: Hashable, msg: DraftRequest) -> tuple:
        return owner, msg.session, msg.round, msg.base, tuple(msg.tokens), msg.assumes and tuple(msg.assumes)

    def _verify(self, s: Session, msg: DraftRequest, reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        if self._repeat(s, msg.round, reply):
            return
        msg = msg.chosen(s.last_final)
        if msg is None:
            return  # a pre-draft on verdicts that did not hold (every branch): dropped, the robot knows from FINAL
        self._accept_round(s, msg.round, msg.base)
        threshold, wanted = msg.exit_threshold, msg.alternatives

        def on_exit(ev: ExitVerdict) -> None:
            if ev.verdict.confidence >= threshold:
                reply(Early(msg.session, msg.round, ev.layer, ev.verdict.accepted, ev.verdict.next_token,
                            ev.verdict.confidence, list(ev.verdict.alternatives[:wanted])))

        probs = None if msg.probs is None else \
            dense(msg.probs, msg.support, self.engine.vocab_size, self.engine.bundle.device)
        result = yield VerifyRequest(s.seq, list(msg.tokens), probs, msg.exit_layers, on_exit)
        if s.cancelled:
            return
        s.compute_s += result.seconds
        v = result.verdict
        s.last_final = (msg.round, v.accepted, v.next_token)
        final = Final(msg.session, msg.round, v.accepted, v.next_token, result.seconds, len(msg.tokens) + 1,
                      [(e.layer, e.verdict.accepted, e.verdict.next_token) for e in result.exits], result.rows,
                      [math.floor(e.verdict.confidence * 100) for e in result.exits])
        s.finals.append(final)
        reply(final)

    def _generate(self, owner: Hashable, msg: Generate, reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        s = self._session(owner, msg.session, reply)
        if s is None or msg.round <= s.last_round:
            return  # a stream is never run twice
        self._accept_round(s, msg.round, msg.base)
        stop = set(msg.stop_ids)
        for i in range(msg.max_new_tokens):
            result = yield VerifyRequest(s.seq, [], exit_layers=[])
            if s.cancelled:
                return  # ended while its pass ran: the token goes nowhere
            s.compute_s += result.seconds
            s.touched = time.monotonic()
            tok = result.verdict.next_token
            reply(Token(msg.session, msg.round, i, tok, result.seconds))
            if tok in stop:
                return


def moved(sid: str | None) -> Error:
    return Error("moved", "this verifier replica is draining: ask the fleet's front for another", sid)
