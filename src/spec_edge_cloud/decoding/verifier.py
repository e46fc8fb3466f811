"""The cloud's side of the protocol for any number of sessions, independent of the transport.

`VerifierService.handle(msg, reply)` is called with each incoming message in arrival order; `reply`
puts a message on the way back at once (EARLY leaves from inside the forward pass). A pre-draft
that arrives while its round is being verified simply waits its turn behind it and is verified
the moment that round ends if its assumption holds: the server-side queue that saves a round trip
on every hit. The in-process link and the ZeroMQ server both drive this class.

`steps(msg, reply)` is the same work as a generator that yields a `VerifyRequest` for each forward
pass it needs and takes the `PassResult` back: whoever drives it chooses how passes run. `handle`
runs each alone; the server's scheduler verifies the requests of several robots that are ready
together in one batched pass (`run_passes`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Generator

from .messages import Cancel, DraftRequest, Early, End, Error, Final, Generate, Ping, Pong, Start, Token
from .target import ExitVerdict, PassResult, TargetEngine, TargetSequence, VerifyRequest
from .verify import dense

log = logging.getLogger(__name__)
Reply = Callable[[object], None]


@dataclass
class Session:
    seq: TargetSequence
    last_round: int = -1
    last_final: tuple[int, int, int] | None = None  # (round, accepted, next)
    touched: float = field(default_factory=time.monotonic)
    compute_s: float = 0.0
    cancelled: bool = False


class VerifierService:
    def __init__(self, engine: TargetEngine, idle_timeout_s: float = 300.0, max_sessions: int = 64):
        self.engine = engine
        self.sessions: dict[str, Session] = {}
        self.idle_timeout_s = idle_timeout_s
        # a static cache holds as many sessions as it has slots: the oldest makes room for a new one
        self.max_sessions = min(max_sessions, engine.slots.slots) if engine.slots else max_sessions

    # -- dispatch --------------------------------------------------------------------------------
    def handle(self, msg: object, reply: Reply, should_stop: Callable[[], bool] = lambda: False) -> None:
        steps = self.steps(msg, reply)
        try:
            request = next(steps)
            while not should_stop():
                try:
                    result = self.run_passes([request])[0]
                except Exception as exc:  # handed to the step that asked: a bad request gets its ERROR
                    request = steps.throw(exc)
                else:
                    request = steps.send(result)
        except StopIteration:
            pass
        finally:
            steps.close()

    def run_passes(self, requests: list[VerifyRequest]) -> list[PassResult]:
        """Run the passes that several steps ask for, as one batched forward pass."""
        return self.engine.verify(requests)

    def steps(self, msg: object, reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        """`handle` in slices: yields each forward pass it needs (one per round, one per token of cloud
        decoding) and gets its result back, so a server shared by several robots can batch them with
        other robots' passes, or run other robots' rounds in between (and stop a cancelled stream),
        instead of running one stream to its end."""
        try:
            if isinstance(msg, Ping):
                reply(Pong(msg.sent))
            elif isinstance(msg, Start):
                self._start(msg, reply)
            elif isinstance(msg, DraftRequest):
                yield from self._draft(msg, reply)
            elif isinstance(msg, Generate):
                yield from self._generate(msg, reply)
            elif isinstance(msg, (End, Cancel)):
                self.sessions.pop(msg.session, None)
            else:
                reply(Error("bad-message", f"unexpected message {type(msg).__name__}"))
        except ValueError as exc:
            reply(Error("bad-request", str(exc), getattr(msg, "session", None)))

    def evict_idle(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        old = [k for k, s in self.sessions.items() if now - s.touched > self.idle_timeout_s]
        for k in old:
            del self.sessions[k]
        return old

    # -- messages --------------------------------------------------------------------------------
    def _session(self, sid: str, reply: Reply) -> Session | None:
        s = self.sessions.get(sid)
        if s is None:
            reply(Error("unknown-session", f"no session {sid!r} (evicted or never started)", sid))
        else:
            s.touched = time.monotonic()
        return s

    def _start(self, msg: Start, reply: Reply) -> None:
        from ..modeling.bundle import Prompt
        self.evict_idle()
        self.sessions.pop(msg.session, None)  # a restarted session gives its cache slot back first
        if msg.session not in self.sessions and len(self.sessions) >= self.max_sessions:
            oldest = min(self.sessions, key=lambda k: self.sessions[k].touched)
            del self.sessions[oldest]
        seq = self.engine.start(Prompt(list(msg.input_ids), msg.image), msg.temperature, msg.seed)
        session = Session(seq)
        session.compute_s += seq.prefill()
        self.sessions[msg.session] = session

    def _accept_round(self, s: Session, rnd: int, base: int) -> bool:
        if rnd <= s.last_round:
            return False  # duplicate or stale
        committed = len(s.seq.tokens)
        if base > committed:
            raise ValueError(f"round {rnd} starts at {base} but only {committed} tokens are committed")
        if base < committed:
            s.seq.seq.truncate(base)  # the robot dropped tokens (it switched plans): follow it
        s.last_round = rnd
        return True

    def _draft(self, msg: DraftRequest, reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        s = self._session(msg.session, reply)
        if s is None:
            return
        if msg.assumes is not None and s.last_final != tuple(msg.assumes):
            return  # a pre-draft on a verdict that did not hold: dropped, the robot knows from FINAL
        if not self._accept_round(s, msg.round, msg.base):
            return
        threshold = msg.exit_threshold

        def on_exit(ev: ExitVerdict) -> None:
            if ev.verdict.confidence >= threshold:
                reply(Early(msg.session, msg.round, ev.layer, ev.verdict.accepted, ev.verdict.next_token,
                            ev.verdict.confidence))

        probs = None if msg.probs is None else \
            dense(msg.probs, msg.support, self.engine.vocab_size, self.engine.bundle.device)
        result = yield VerifyRequest(s.seq, list(msg.tokens), probs, msg.exit_layers, on_exit)
        s.compute_s += result.seconds
        v = result.verdict
        s.last_final = (msg.round, v.accepted, v.next_token)
        reply(Final(msg.session, msg.round, v.accepted, v.next_token, result.seconds, len(msg.tokens) + 1,
                    [(e.layer, e.verdict.accepted, e.verdict.next_token) for e in result.exits], result.rows))

    def _generate(self, msg: Generate, reply: Reply) -> Generator[VerifyRequest, PassResult, None]:
        s = self._session(msg.session, reply)
        if s is None or not self._accept_round(s, msg.round, msg.base):
            return
        stop = set(msg.stop_ids)
        for i in range(msg.max_new_tokens):
            result = yield VerifyRequest(s.seq, [], exit_layers=[])
            if msg.session not in self.sessions:
                return  # ended while its pass ran: the token goes nowhere
            s.compute_s += result.seconds
            tok = result.verdict.next_token
            reply(Token(msg.session, msg.round, i, tok, result.seconds))
            if tok in stop:
                return
