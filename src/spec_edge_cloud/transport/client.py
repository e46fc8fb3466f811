"""The robot's `Link` to a verifier over ZeroMQ: a DEALER with heartbeats, retries and reconnection.

No thread hand-off on the way of a round: `send` writes to the socket from the caller's thread, and
`recv` waits on the socket itself, so a reply reaches the decoding client the moment it arrives
(and, near the moment a verdict is due, it waits in 1 ms slices, so the core is awake for it). A
lock makes the socket one thread's at a time (ZeroMQ sockets are not thread-safe); a keeper thread
takes it, without ever blocking while holding it, to answer for liveness (heartbeats, retries,
reconnection, draining replies) while the client is busy drafting or idle between responses.
`send`, `recv` and `close` are safe from any thread; one called while another thread waits in `recv`
waits for that wait's current slice (at most a quarter of the shortest timer).

Liveness. The link is *up* from the cloud's WELCOME until nothing (reply or heartbeat answer) has
come back for `dead_after_s`; then it is *down*: messages sent are dropped, `recv` returns None at
once, so the decoding client finishes the response on the robot (edge mode, tokens marked
unverified). While down, the link opens a fresh socket and says HELLO; the first WELCOME brings it
back up, and the next response goes to the cloud again. A HELLO unanswered for the handshake timer
is said again on a fresh socket, and the timer doubles (up to `max_reconnect_s`): a handshake slower
than the timer (a loaded cloud, a long link) is not started over for ever. The timer starts at
`reconnect_s`, or twice the last measured handshake if longer, and starts again on each WELCOME.
A cloud that is up but slower than the client's deadline is the client's business
(`DecodeConfig.deadline_s`).

Loss. The link emulator (and a reconnecting socket) can lose whole messages. Frames carry sequence
numbers (`ordering.InOrder` drops duplicates and restores order); for each session the link keeps
the PREFILL and the DRAFTs still waiting for their FINAL, and re-sends them when nothing about the
session has come back for `retry_s` (or twice the recent round time, if longer). The server never
verifies a round twice: it answers a re-sent DRAFT with the FINAL it already computed. A PREFILL
that never arrived (lost, or sent while the link was down) is re-sent when the server answers
`unknown-session`, carrying every token committed since (so a late `unknown-session`, answering a
copy of a DRAFT that arrived before the first PREFILL, restarts the session where the robot is).
Cloud decoding (GENERATE) streams tokens and is not retried: a lost TOKEN ends in the client's
deadline fallback.

A fleet (docs/fleet.md). The endpoint a link is given is its *home*: a plain verifier, or a fleet's
front, whose WELCOME names a replica to talk to instead (`redirect`); the link then says HELLO
there, and every round goes straight to that replica (the front is never on a round's path).
Every reconnection starts at home again, so a robot whose replica died is sent to a healthy one. A
replica being drained answers a new session with ERROR `moved`: the link goes home for another
replica while keeping that session's PREFILL and DRAFTs (held, not sent, meanwhile), and sends them
to the new replica once it is welcomed there, so the response goes on, verified. A replica that
dies mid-response (its connection drops: the socket monitor's DISCONNECTED) is handled the same
way, except that each session's PREFILL then carries the prompt and every token committed so far
(the link follows them: each FINAL commits draft[:accepted] + next at the DRAFT's base), so the new
replica re-prefills to exactly where the old one was and the response goes on, verified. A session
in cloud decoding (GENERATE) is resumed the same way: the link follows its TOKENs too, re-prefills
with them and asks the new replica for the rest of the stream (the tokens not yet received, from
where it stopped), renumbering its TOKENs so the robot's stream goes on where it was.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import msgspec
import zmq
from zmq.utils.monitor import recv_monitor_message

from ..decoding.messages import Early, Error, Final, Generate, Ping, Pong, Start, Token
from . import protocol, security
from .ordering import InOrder
from .protocol import Hello, ProtocolError, Welcome, WireOptions

log = logging.getLogger(__name__)
# plain ints: pyzmq's flag enums cost microseconds a use, and the round's path uses several
_POLLIN, _EVENTS, _NOBLOCK = int(zmq.POLLIN), int(zmq.EVENTS), int(zmq.NOBLOCK)
WAKE_SLICES = 3  # `recv` wakes in slices from this many (and a tenth of the round time) before a verdict is due


class HandshakeError(ValueError):
    """The cloud refused this robot (different tokenizer, unexpected target, other protocol version)."""


@dataclass
class LinkOptions:
    """The robot side's knobs (all have working defaults on loopback)."""
    client_secret_key: str = ""     # NAME.key_secret of this robot's key pair ("" = no CURVE)
    server_public_key: str = ""     # the server's NAME.key
    insecure: bool = False          # allow plaintext to a non-loopback endpoint
    expect_model: str = ""          # the target's model fingerprint to insist on ("" = any)
    draft_model: str = ""           # this robot's draft fingerprint, for the cloud's logs
    name: str = field(default_factory=socket.gethostname)
    heartbeat_s: float = 0.5
    dead_after_s: float = 6.0       # silence (no reply, no heartbeat answer) after which the cloud is gone
    reconnect_s: float = 1.0        # the first wait for a WELCOME before saying HELLO again
    max_reconnect_s: float = 8.0    # the longest (the wait doubles with each unanswered HELLO)
    retry_s: float = 1.0            # the retransmission timer until rounds have been timed, and its ceiling
    min_retry_s: float = 0.05       # its floor
    handshake_timeout_s: float = 5.0
    # from shortly before a verdict is due (the recent round time after its DRAFT) until it comes,
    # wake this often (0: sleep through). A core idle for milliseconds drops into a deep sleep (on
    # a VM, its vCPU is descheduled) and wakes ~0.1 ms late with cold caches.
    wait_slice_s: float = 0.001
    reorder_wait_s: float = 0.02
    max_frame_bytes: int = protocol.MAX_FRAME_BYTES
    jpeg_quality: int = 90
    probs_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not 0 < self.reconnect_s <= self.max_reconnect_s:
            raise ValueError(f"reconnect_s must be in (0, max_reconnect_s={self.max_reconnect_s:g}], "
                             f"got {self.reconnect_s}")
        if not 0 <= self.wait_slice_s <= 1:
            raise ValueError(f"wait_slice_s must be in 0..1 s (0: no slicing), got {self.wait_slice_s}")


@dataclass
class RoundTiming:
    """When a round's DRAFT left and its verdicts came back (perf_counter seconds)."""
    session: str
    round: int
    sent: float
    early: list[tuple[int, float]] = field(default_factory=list)   # (exit layer, arrival)
    final: float | None = None
    compute_s: float = 0.0
    tokens_in_pass: int = 0
    rows: int = 1  # robots whose rounds shared that pass on the server


@dataclass
class LinkStats:
    frames_out: int = 0
    frames_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    dropped_while_down: int = 0
    duplicates: int = 0
    reordered: int = 0
    retries: int = 0
    restarts: int = 0            # PREFILLs re-sent after `unknown-session`
    reconnects: int = 0
    bad_frames: int = 0
    heartbeat_rtt_s: float | None = None
    rounds: deque = field(default_factory=lambda: deque(maxlen=10000))   # RoundTiming


@dataclass
class _Pending:
    start: bytes | None = None                 # packed PREFILL body
    drafts: OrderedDict = field(default_factory=OrderedDict)   # round -> packed DRAFT body
    heard: float = 0.0                         # last time anything about the session moved
    prompt: Start | None = None                # for a re-prefill (elsewhere, or restarted): the PREFILL,
    committed: list[int] = field(default_factory=list)  # its tokens committed so far (prompt included),
    sent: dict = field(default_factory=dict)   # round -> DraftRequest still without its FINAL,
    last_final: tuple | None = None            # (round, accepted, next) of the newest FINAL
    stream: Generate | None = None             # the cloud-decoding request running, as the robot sent it
    streamed: int = 0                          # its TOKENs received so far (each committed)
    shift: int = 0                             # added to a TOKEN's index: the tokens streamed before a resume
    restarts: int = 0                          # PREFILLs re-sent (bounded)


class ZmqLink:
    """`Link` over a DEALER socket (see the module docstring for liveness and loss)."""

    def __init__(self, endpoint: str, tokenizer_fingerprint: str, options: LinkOptions | None = None):
        self.options = opt = options or LinkOptions()
        have_keys = bool(opt.client_secret_key and opt.server_public_key)
        if bool(opt.client_secret_key) != bool(opt.server_public_key):
            raise ValueError("CURVE needs both client_secret_key and server_public_key")
        security.require_security(endpoint, have_keys, opt.insecure, "cloud")
        if have_keys:  # fail now on unreadable keys
            security.load_pair(opt.client_secret_key)
            security.load_public(opt.server_public_key)
        self.home = self.endpoint = endpoint  # home: what it was given; endpoint: what it talks to now
        self.hello = Hello(tokenizer_fingerprint, opt.draft_model, opt.expect_model, opt.name[:128])
        self.wire = WireOptions(opt.jpeg_quality, opt.probs_dtype)
        self.welcome: Welcome | None = None
        self.refused: str | None = None
        self.stats = LinkStats()
        self.sender = os.urandom(protocol.SENDER_BYTES)
        self._lock = threading.Lock()       # the socket and every field below are one thread's at a time
        self._closed = threading.Event()
        self._up = False
        self._moving = False                # sent away by a draining replica: sessions held for the next one
        self._lost = ""                     # the replica whose connection dropped, named in the next HELLOs home
        self._moved_at = 0.0
        self._inbox: deque = deque()
        self._ctx = zmq.Context()
        self._dealer: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None   # on a fleet's replica: its connection's events
        self._pending: dict[str, _Pending] = {}
        self._timings: dict[tuple[str, int], RoundTiming] = {}
        self._round_s: float | None = None
        self._samples: deque = deque(maxlen=64)   # round trips (DRAFT to FINAL) of rounds sent once
        self._resent: set[tuple[str, int]] = set()  # rounds re-sent: their round trips are not timed
        self._last_ping = 0.0
        self._handshake_s = 0.0             # the last handshake's measured time (HELLO to WELCOME)
        self._hello_wait = opt.reconnect_s  # the handshake timer
        self._tick = min(opt.heartbeat_s, opt.retry_s, opt.reconnect_s) / 4
        self._chores_at = 0.0
        with self._lock:
            self._reconnect()
        self._keeper = threading.Thread(target=self._keep, name="zmq-link-keeper", daemon=True)
        self._keeper.start()

    # -- the Link interface ----------------------------------------------------------------------
    def send(self, msg: object) -> None:
        kind, body = protocol.pack_body(msg, self.wire)
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("link is closed")
            self._outgoing(msg, kind, getattr(msg, "session", None), getattr(msg, "round", None),
                           getattr(msg, "assumes", None) is not None, body)

    def recv(self, timeout: float) -> object | None:
        """The next reply; None after `timeout`, or at once while the cloud is unreachable."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._closed.is_set():
                if self._inbox:
                    return self._inbox.popleft()
                left = deadline - time.monotonic()
                if not self._up or left <= 0:
                    return None
                # returns as soon as a reply is in
                self._pump(min(left, self._next_chore(), self._until_wake()), drain=False)
            return None

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._keeper.join(timeout=5)
        with self._lock:
            if self._monitor is not None:
                self._monitor.close(linger=0)
            if self._dealer is not None:
                self._dealer.close(linger=0)
            self._ctx.term()

    # -- extras ----------------------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self._up

    def wait_up(self, timeout: float) -> bool:
        """Block until the cloud has welcomed this robot (or `timeout`, or a refusal)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._up and not self.refused and not self._closed.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._pump(min(left, self._next_chore()))
            return self._up

    # -- socket work (caller holds the lock) -----------------------------------------------------
    def _keep(self) -> None:
        while not self._closed.wait(self._tick):
            if self._lock.acquire(blocking=False):  # the decoding thread is in recv: it does the chores
                try:
                    self._pump(0)
                finally:
                    self._lock.release()

    def _pump(self, wait: float, drain: bool = True) -> None:
        """Take in the frames that have arrived (waiting up to `wait` s for one); do the chores when due.
        With `drain` False it stops at the first frame that leaves a reply for `recv` (the rest wait
        in the socket for the next call: asking ZeroMQ whether more is there costs 20 µs, cold).

        The round's path is lean on purpose: after a wait it runs with cold caches, and every call
        counts (`zmq.zmq_poll` on plain ints, not `Socket.poll`, which builds a Poller and flag enums)."""
        # whole milliseconds, rounded up: rounded down, the last millisecond before a timer was a busy loop
        if zmq.zmq_poll([(self._dealer, _POLLIN)], max(0, math.ceil(wait * 1000))):
            # drain while ZMQ_EVENTS says a frame is there: ending on zmq.Again would raise (and build)
            # an exception on every pump, and that alone cost 0.1 ms a round (cold, after a long wait)
            self._incoming(self._dealer.recv(_NOBLOCK))
            while (drain or not self._inbox) and self._dealer.getsockopt(_EVENTS) & _POLLIN:
                self._incoming(self._dealer.recv(_NOBLOCK))
        now = time.monotonic()
        if self._order.held:
            for msg in self._order.expire(now):
                self._dispatch(msg, now)
        if now >= self._chores_at:
            self._chores(now)

    def _chores(self, now: float) -> None:
        """Liveness, heartbeat, retries and reconnection: every `_tick` s, not on every frame."""
        self._chores_at = now + self._tick
        opt = self.options
        if self._monitor is not None and self._up and not self._moving and self._replica_lost():
            log.warning("replica %s dropped the connection: asking %s for another, sessions held", self.endpoint,
                        self.home)
            self._moving, self._moved_at, self._lost = True, now, self.endpoint
            self._reconnect()
            return
        if self._moving:
            if now - self._moved_at > opt.dead_after_s:
                self._go_down(f"no replica took this robot within {opt.dead_after_s:g} s of a move")
            elif now - self._hello_at >= self._hello_wait:
                self._hello_again()
            return
        if self._up:
            if now - self._heard > opt.dead_after_s:
                self._go_down(f"no reply from the cloud for {opt.dead_after_s:g} s")
            elif now - self._last_ping >= opt.heartbeat_s:
                self._send_frame(*protocol.pack_body(Ping(time.time())))
                self._last_ping = now
            self._retry(now)
        if not self._up and not self.refused and now - self._hello_at >= self._hello_wait:
            self._hello_again()

    def _replica_lost(self) -> bool:
        """Whether the socket monitor saw the replica's connection drop (its process died)."""
        lost = False
        while self._monitor.poll(0):
            lost |= recv_monitor_message(self._monitor)["event"] == zmq.EVENT_DISCONNECTED
        return lost

    def _until_wake(self) -> float:
        """How long `recv` may sleep at once: until shortly before the newest DRAFT's verdict is due
        (`WAKE_SLICES` slices, and a tenth of the round time: the estimate is a moving average, and
        rounds vary), then one slice at a time until it comes; without a round in flight (or an
        estimate), for ever."""
        slice_s = self.options.wait_slice_s
        if not slice_s or not self._timings or self._round_s is None:
            return float("inf")
        due = next(reversed(self._timings.values())).sent + self._round_s
        return max(slice_s, due - WAKE_SLICES * slice_s - self._round_s / 10 - time.perf_counter())

    def _next_chore(self) -> float:
        """Seconds until the next timer (chores, reorder gap) may need the socket."""
        due = self._chores_at
        gap = self._order.deadline()
        return max(0.0, (due if gap is None else min(due, gap)) - time.monotonic())

    def _reconnect(self, to: str | None = None) -> None:
        """A fresh socket (nothing stale queued in it) and a HELLO, to `to` (a fleet's replica) or home;
        the WELCOME will bring the link up."""
        self.endpoint = to or self.home
        if self._monitor is not None:
            self._dealer.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self.stats.reconnects += 1
        opt = self.options
        s = self._ctx.socket(zmq.DEALER)
        s.linger = 0
        s.maxmsgsize = 4 * opt.max_frame_bytes
        s.reconnect_ivl = 100
        s.reconnect_ivl_max = 1000
        s.sndhwm = s.rcvhwm = 1000
        s.routing_id = b"\x01" + os.urandom(15)  # unguessable (libzmq's own are sequential); never 0-led (reserved)
        if opt.client_secret_key:
            security.secure_client(s, opt.client_secret_key, opt.server_public_key)
        if to is not None:  # a fleet's replica: its death is seen when its connection drops
            self._monitor = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        s.connect(self.endpoint)
        self._dealer = s
        self._seq = 0
        self._order = InOrder(opt.reorder_wait_s)
        self._server: bytes | None = None
        self._heard = self._hello_at = time.monotonic()
        hello = msgspec.structs.replace(self.hello, lost=self._lost) if self._lost and to is None else self.hello
        self._send_frame(*protocol.pack_body(hello))

    def _hello_again(self) -> None:
        """The HELLO in flight went unanswered for the handshake timer (it was lost, or the cloud is
        gone, or slow): say it again on a fresh socket, and wait twice as long for this one."""
        if self._hello_at > float("-inf"):  # not the first try after going down
            self._hello_wait = min(self.options.max_reconnect_s, 2 * self._hello_wait)
        self._reconnect()

    def _handshake_timer(self) -> float:
        """The first wait for a WELCOME: `reconnect_s`, or twice the last measured handshake."""
        return min(self.options.max_reconnect_s, max(self.options.reconnect_s, 2 * self._handshake_s))

    def _go_down(self, reason: str) -> None:
        if self._up:
            log.warning("cloud link down: %s; decoding on the robot alone until it answers again", reason)
        self._up = self._moving = False
        self._pending.clear()
        self._timings.clear()
        self._hello_at = float("-inf")  # reconnect at once
        self._hello_wait = self._handshake_timer()
        self._chores_at = 0.0

    def _send_frame(self, kind: str, body: bytes) -> None:
        data = protocol.frame(kind, body, self._seq, self.sender)
        self._seq += 1
        try:
            self._dealer.send(data, _NOBLOCK)
            self.stats.frames_out += 1
            self.stats.bytes_out += len(data)
        except zmq.Again:  # the socket's queue is full (the connection is stuck): lost; retries cover it
            self.stats.dropped_while_down += 1

    def _outgoing(self, msg: object, kind: str, session: str | None, rnd: int | None, predraft: bool,
                  body: bytes) -> None:
        if not self._up:
            self.stats.dropped_while_down += 1
            if kind == "PREFILL":  # kept: if the link is back before the response gives up, its first
                self._pending[session] = _Pending(start=body, heard=time.monotonic())  # DRAFT brings it
            elif kind in ("END", "CANCEL"):
                self._pending.pop(session, None)
            return
        sent = time.perf_counter()
        if not self._moving:  # while moving, held: sent to the next replica once it welcomes this robot
            self._send_frame(kind, body)  # first: the bookkeeping below runs while the frame travels
        now = time.monotonic()
        if kind == "PREFILL":
            self._pending[session] = _Pending(start=body, heard=now, committed=list(msg.input_ids), prompt=msg)
        elif kind == "DRAFT":
            p = self._pending.get(session)
            if p is None:
                p = self._pending[session] = _Pending()
            if not predraft:
                p.drafts.clear()  # a fresh draft means every earlier round has its FINAL
                p.sent.clear()
            p.drafts[rnd] = body
            p.sent[rnd] = msg
            p.heard = now
            self._timings[(session, rnd)] = RoundTiming(session, rnd, sent)
        elif kind == "GENERATE" and session in self._pending:
            p = self._pending[session]  # cloud decoding from here: no DRAFT waits any more
            p.drafts.clear()
            p.sent.clear()
            p.stream, p.streamed, p.shift = msg, 0, 0
            del p.committed[msg.base:]
        elif kind in ("END", "CANCEL"):
            self._pending.pop(session, None)
            for key in [k for k in self._timings if k[0] == session]:
                del self._timings[key]

    def retry_after(self) -> float:
        """The retransmission timer, from the measured round trips: 1.25 x their 90th percentile
        (a round-trip time that jitter and batching rarely exceed), within [min_retry_s, retry_s];
        retry_s until 8 rounds have been timed. Only rounds sent once are timed (Karn's rule)."""
        opt = self.options
        if len(self._samples) < 8:
            return opt.retry_s
        p90 = sorted(self._samples)[int(0.9 * (len(self._samples) - 1))]
        return min(opt.retry_s, max(opt.min_retry_s, 1.25 * p90))

    def _retry(self, now: float) -> None:
        if self._moving:
            return
        wait = self.retry_after()
        for session, p in self._pending.items():
            if p.drafts and now - p.heard > wait:
                for rnd, body in p.drafts.items():
                    self._send_frame("DRAFT", body)
                    self._resent.add((session, rnd))
                p.heard = now
                self.stats.retries += 1

    def _incoming(self, data: bytes) -> None:
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        try:
            env = protocol.unpack(data, self.options.max_frame_bytes)
        except ProtocolError as exc:
            self.stats.bad_frames += 1
            log.warning("bad frame from the cloud dropped: %s", exc)
            return
        now = time.monotonic()
        if env.sender != self._server:  # the first frame of this server instance on this socket
            if self._server is not None and self._up:
                self._go_down("the cloud restarted")
                return
            self._server = env.sender
            self._order = InOrder(self.options.reorder_wait_s)
        before = (self._order.dropped, self._order.reordered)
        for msg in self._order.push(env.seq, env.msg, now):
            self._dispatch(msg, now)
        self.stats.duplicates += self._order.dropped - before[0]
        self.stats.reordered += self._order.reordered - before[1]

    def _dispatch(self, msg: object, now: float) -> None:
        self._heard = now
        if isinstance(msg, Welcome):
            return self._welcomed(msg)
        if isinstance(msg, Pong):
            self.stats.heartbeat_rtt_s = time.time() - msg.sent
            return
        if isinstance(msg, Error) and self._transport_error(msg):
            return
        if not self._up:
            return  # a late reply from before the link went down: that response is already over
        session = getattr(msg, "session", None)
        p = self._pending.get(session)
        if p is not None:
            p.heard = now
        if isinstance(msg, (Early, Final)):
            self._time_round(msg)
            if isinstance(msg, Final) and p is not None:
                for rnd in [r for r in p.drafts if r <= msg.round]:
                    del p.drafts[rnd]
                self._commit(p, msg)
        elif isinstance(msg, Token) and p is not None and p.stream is not None and msg.round == p.stream.round:
            msg = self._streamed(p, msg)
        self._inbox.append(msg)

    @staticmethod
    def _commit(p: _Pending, final: Final) -> None:
        """Follow the session's committed tokens: the FINAL's round commits draft[:accepted] + next."""
        d = p.sent.pop(final.round, None)
        for rnd in [r for r in p.sent if r < final.round]:
            del p.sent[rnd]
        if d is None or p.last_final is not None and final.round <= p.last_final[0]:
            return  # a repeated FINAL
        d = d.chosen(p.last_final)  # the branch of a fan-out pre-draft that was verified
        if d is None:
            return
        del p.committed[d.base:]
        p.committed += d.tokens[:final.accepted]
        p.committed.append(final.next_token)
        p.last_final = (final.round, final.accepted, final.next_token)

    @staticmethod
    def _streamed(p: _Pending, token: Token) -> Token:
        """Follow a cloud-decoding stream: each TOKEN in order is committed. After a resume the
        replica numbers its TOKENs from 0 again; they are renumbered as the robot's stream goes on."""
        if p.shift:
            token = msgspec.structs.replace(token, index=token.index + p.shift)
        if token.index == p.streamed:
            p.committed.append(token.token)
            p.streamed += 1
        return token

    def _resend(self, p: _Pending) -> None:
        """A held session's messages to the replica that took this robot: its PREFILL (with every token
        committed so far: the replica re-prefills to where the last one was) and its DRAFTs waiting
        for a FINAL (a pre-draft whose assumption a FINAL here already confirmed goes as a plain
        DRAFT, one it refuted is dropped: the client drafts afresh on that FINAL), or its cloud-decoding
        stream, asked for the tokens it still owes from where it stopped."""
        if p.prompt is None:
            if p.start is not None:
                self._send_frame("PREFILL", p.start)
            for body in p.drafts.values():
                self._send_frame("DRAFT", body)
            return
        _, p.start = protocol.pack_body(msgspec.structs.replace(p.prompt, input_ids=list(p.committed)), self.wire)
        self._send_frame("PREFILL", p.start)  # an `unknown-session` answer re-sends this one
        if p.stream is not None:
            g = p.stream
            if p.streamed < g.max_new_tokens and not (p.streamed and p.committed[-1] in g.stop_ids):
                rest = msgspec.structs.replace(g, base=len(p.committed), max_new_tokens=g.max_new_tokens - p.streamed)
                p.shift = p.streamed
                self._send_frame(*protocol.pack_body(rest, self.wire))
            return
        for rnd, d in list(p.sent.items()):
            if d.assumes is not None and p.last_final is not None and d.assumes[0] <= p.last_final[0]:
                d = d.chosen(p.last_final)  # the branch assuming that FINAL, as a plain DRAFT
                if d is None:
                    p.sent.pop(rnd)
                    p.drafts.pop(rnd, None)
                    continue
                p.sent[rnd] = d
            _, p.drafts[rnd] = protocol.pack_body(d, self.wire)
            self._send_frame("DRAFT", p.drafts[rnd])

    def _transport_error(self, err: Error) -> bool:
        """Handle what the link itself caused or can repair; True if the client need not see it."""
        if err.code in ("hello-mismatch", "bad-version"):
            self.refused = f"{err.code}: {err.text}"
            log.error("the cloud refused this robot: %s", self.refused)
            self._up = False
            return True
        if err.code == "hello-required":
            self._go_down("the cloud forgot this robot (restarted?)")
            return True
        if err.code == "moved" and self._up:  # a draining replica: home for another, sessions held
            if not self._moving:
                log.info("replica %s is draining: asking %s for another", self.endpoint, self.home)
                self._moving, self._moved_at = True, time.monotonic()
                self._reconnect()
            return True
        p = self._pending.get(err.session)
        if err.code == "unknown-session" and p is not None and p.start is not None and p.restarts < 8:
            p.restarts += 1  # its PREFILL was lost: send it again (with every token committed since: a late
            self.stats.restarts += 1  # answer to a DRAFT sent before the first PREFILL arrived restarts the
            self._resend(p)  # session where the robot is, not at the prompt), then the drafts waiting on it
            return True
        return False

    def _welcomed(self, w: Welcome) -> None:
        if self.hello.expect_model and w.model != self.hello.expect_model:
            self.refused = f"the cloud serves target {w.model}, this robot expects {self.hello.expect_model}"
            return
        if w.tokenizer != self.hello.tokenizer:
            self.refused = f"the cloud's tokenizer {w.tokenizer} differs from this robot's {self.hello.tokenizer}"
            return
        if w.redirect:  # a fleet's front: this robot's replica
            self._reconnect(w.redirect)
            return
        was_up = self._up
        self.welcome, self.refused, self._up, self._lost = w, None, True, ""
        self._handshake_s = time.monotonic() - self._hello_at
        self._hello_wait = self._handshake_timer()
        if self._moving:  # the sessions held through the move go on here
            self._moving = False
            for p in self._pending.values():
                self._resend(p)
                p.heard = time.monotonic()
        if not was_up:
            log.info("cloud link up: %s (target %s, %d layers, exits %s%s)", self.endpoint, w.model, w.layers,
                     w.exit_layers, f", timings EMULATED with profile {w.emulated}" if w.emulated else "")

    def _time_round(self, msg: Early | Final) -> None:
        t = self._timings.get((msg.session, msg.round))
        if t is None:
            return
        arrival = time.perf_counter()
        if isinstance(msg, Early):
            t.early.append((msg.layer, arrival))
            return
        t.final, t.compute_s, t.tokens_in_pass = arrival, msg.compute_s, msg.tokens_in_pass
        t.rows = msg.rows or 1
        self.stats.rounds.append(t)
        elapsed = arrival - t.sent
        if (msg.session, msg.round) in self._resent:
            self._resent.discard((msg.session, msg.round))
        else:
            self._samples.append(elapsed)
        self._round_s = elapsed if self._round_s is None else 0.8 * self._round_s + 0.2 * elapsed
        del self._timings[(msg.session, msg.round)]


def connect(endpoint: str, tokenizer_fingerprint: str, options: LinkOptions | None = None) -> ZmqLink:
    """Open a link to the verifier at `endpoint` and wait (up to handshake_timeout_s) for its WELCOME.

    Raises HandshakeError if the cloud refuses this robot, ValueError for a non-loopback endpoint
    without CURVE keys. A cloud that does not answer yet is not an error: the link keeps trying in
    the background and the robot decodes alone until then.
    """
    link = ZmqLink(endpoint, tokenizer_fingerprint, options)
    if not link.wait_up(link.options.handshake_timeout_s):
        if link.refused:
            reason = link.refused
            link.close()
            raise HandshakeError(f"{endpoint}: {reason}")
        log.warning("no answer from the cloud at %s yet: decoding on the robot alone until it answers",
                    endpoint)
    return link
