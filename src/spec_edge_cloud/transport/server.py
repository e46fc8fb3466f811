"""The cloud's verifier server: a ZeroMQ ROUTER in front of one `VerifierService`, in one thread.

One thread owns the socket and the model, so a reply leaves the moment it exists, with no hand-off
between threads (and no lock, no GIL contention): an EARLY is put on the wire from inside the forward
pass by the layer hook that computed it, while the pass goes on. The same thread
- decodes and checks every frame (`protocol`), answering HELLO, PING and every malformed frame
  itself;
- runs the service (`VerifierService`, the one session layer) a turn at a time, fairly across
  peers: the rounds of up to `max_batch` peers that are ready together share one batched pass;
- hands images to a small pool of decoder threads (`image_workers`) and waits for none of them: a
  peer's messages after a PREFILL with an image wait (for that peer only) until its pixels are in,
  one image at a time per peer (its image memory: one decoded frame), an image that takes longer
  than `image_decode_timeout_s` is answered with an ERROR; the JPEG headers were checked before
  (`protocol.check_jpeg`: at most `max_image_pixels` pixels and a bounded number of scans), so an
  image bomb costs its sender, not the fleet;
- services the socket between decoder layers during a pass (a forward hook, at most every
  `io_interval_s`), so HELLOs, heartbeats and pre-drafts are taken in while a long pass runs.

Who is who. A connection (the ROUTER's routing identity) is bound at its HELLO to the link that said
it (the frame's random `sender`) and, with CURVE, to the client's public key. A frame from another
link or key under a known identity (a peer reusing a departed robot's identity) starts a fresh,
unwelcomed connection: the sessions of the old one are ended, never inherited. Sessions belong to
their connection; fairness and the caps belong to the authenticated peer: its CURVE key, or the
connection itself when CURVE is off. ERROR texts never name an identity.

Bounded: a session holds at most `max_session_tokens` tokens of KV cache; a peer at most
`max_connections_per_client` connections (its least recently heard one makes room for a new
one), `max_sessions_per_client` sessions and
`max_queued_per_client` waiting requests; the server `max_sessions` (a full server evicts only
idle sessions, else refuses); HELLOs are taken at `handshakes_per_s` at most.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Hashable

import zmq

from ..decoding.messages import Cancel, DraftRequest, End, Error, Generate, Ping, Pong, Start
from ..decoding.modes import setting
from ..decoding.target import TargetEngine
from ..decoding.verifier import VerifierService, moved
from . import protocol, security
from .ordering import InOrder
from .protocol import Hello, ProtocolError, Welcome

log = logging.getLogger(__name__)
STATS_LINE = "verifier stats:"  # how the verifier process prints `VerifierServer.stats()` (on SIGUSR1)
# plain ints: pyzmq's flag enums cost microseconds a use, and the round's path uses several
_POLLIN, _EVENTS, _RCVMORE = int(zmq.POLLIN), int(zmq.EVENTS), int(zmq.RCVMORE)
_NOBLOCK, _SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)


@dataclass
class ServerConfig:
    """The server's knobs, each with its help text and (numbers) its inclusive range; the same names
    are the keys of config/cloud.yaml (verifier_node) and the verifier node's parameters."""
    bind: str = setting("tcp://127.0.0.1:5555", "ROUTER endpoint; off loopback it needs CURVE keys (or insecure)")
    server_secret_key: str = setting("", "NAME.key_secret of the server's key pair (empty: no CURVE)")
    authorized_clients_dir: str = setting("", "directory of the admitted robots' public keys (*.key)")
    insecure: bool = setting(False, "allow plaintext on a non-loopback bind")
    idle_timeout_s: float = setting(120.0, "evict a session (and a robot) silent for this long", (1.0, None))
    max_sessions: int = setting(64, "sessions open at once, all robots together", (1, None))
    max_sessions_per_client: int = setting(4, "sessions per peer (its CURVE key, or its connection)", (1, None))
    max_connections_per_client: int = setting(4, "welcomed connections per CURVE key (without CURVE: each its "
                                                 "own)", (1, None))
    max_queued_per_client: int = setting(16, "requests of one peer waiting for their turn; more are refused "
                                             "`busy`", (1, None))
    evictable_after_s: float = setting(10.0, "a full server may evict a session idle this long (never a live one)",
                                       (0.0, None))
    handshakes_per_s: float = setting(50.0, "HELLOs answered per second at most, all peers together (burst: as "
                                            "many)", (0.1, None))
    max_image_pixels: int = setting(1 << 21, "width x height of a PREFILL's image (checked in its JPEG header)",
                                    (1, protocol.MAX_IMAGE_PIXELS))
    image_workers: int = setting(2, "threads decoding images, off the serving thread", (1, 64))
    image_decode_timeout_s: float = setting(2.0, "an image not decoded by then is refused (ERROR to its sender)",
                                            (0.01, 60.0))
    max_batch: int = setting(8, "robots' passes verified together in one forward pass (1: none)", (1, 1024))
    max_frame_bytes: int = setting(protocol.MAX_FRAME_BYTES, "largest frame taken from a peer", (4096, 1 << 30))
    max_draft_tokens: int = setting(32, "draft tokens per round at most", (1, 4096))
    max_session_tokens: int = setting(4096, "tokens per session at most (capped by the model's context)",
                                      (2, None))
    max_new_tokens: int = setting(1024, "tokens per GENERATE (cloud decoding) at most", (1, None))
    reorder_wait_s: float = setting(0.02, "how long a message that came early waits for the ones before it",
                                    (0.0, 10.0))
    io_interval_s: float = setting(0.002, "during a pass, service the socket at most this often", (0.0, 1.0))
    log_rounds: bool = setting(True, "log every verified round")

    def __post_init__(self) -> None:
        problems = check_fields(self)
        if problems:
            raise ValueError("verifier parameters: " + "; ".join(problems))

    @classmethod
    def from_params(cls, params: dict) -> "ServerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown verifier parameters {unknown}; known: {sorted(known)}")
        return cls(**params)


def check_fields(obj: object) -> list[str]:
    """What is wrong with a dataclass's values: each must be of its declared type (a bool is a bool,
    not the string "false"; an int not a float; a float any finite number) and within its `range`."""
    problems = []
    for f in fields(obj):
        v, kind = getattr(obj, f.name), f.type
        ok = {"bool": type(v) is bool, "int": type(v) is int, "str": isinstance(v, str),
              "float": type(v) in (int, float) and math.isfinite(v)}.get(kind, True)
        if not ok:
            problems.append(f"{f.name} must be {'a' if kind != 'int' else 'an'} {kind}, got {type(v).__name__} {v!r}")
            continue
        lo, hi = f.metadata.get("range") or (None, None)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            problems.append(f"{f.name} = {v!r} is outside {lo if lo is not None else '-inf'}.."
                            f"{hi if hi is not None else 'inf'}")
    return problems


@dataclass(eq=False)
class _Peer:
    """One connection (routing identity), bound at its first frame to a link and a CURVE key: it owns
    its sessions in the service; `group` (its CURVE key, or itself) is the peer that caps and fairness
    count."""
    order: InOrder
    seen: float
    sender: bytes | None = None
    key: str | None = None    # the client's CURVE public key (Z85), when CURVE is on
    welcomed: bool = False
    out_seq: int = 0
    name: str = ""
    group: Hashable = None
    decoding: "_Decoding | None" = None   # its image being decoded; its later messages wait in `held`
    held: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = self.key if self.key is not None else self


@dataclass
class _Decoding:
    future: Future
    msg: Start
    deadline: float


class _Bucket:
    """A token bucket: `rate` events a second, bursts of as many."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Limits:
    """What one request may ask of this target: ids in its vocabulary, bounded lengths."""

    def __init__(self, engine: TargetEngine, config: ServerConfig):
        self.vocab = int(engine.parts.lm_head.weight.shape[0])
        self.max_tokens = min(config.max_session_tokens, engine.bundle.max_positions - 1)
        self.max_draft = config.max_draft_tokens
        self.max_new = config.max_new_tokens

    def _ids(self, ids: list[int], what: str) -> None:
        if ids and max(ids) >= self.vocab:
            bad = [t for t in ids if t >= self.vocab]
            raise ProtocolError("bad-request", f"{what}: token ids {bad[:5]} outside the vocabulary of {self.vocab}")

    def _draft_probs(self, msg: DraftRequest) -> None:
        """Dense draft distributions are [tokens, vocab]; truncated ones [tokens, k] with k ids a row."""
        support, shape = msg.support, tuple(msg.probs.shape)
        if support is None:
            expected = (len(msg.tokens), self.vocab)
        else:
            k = len(support[0]) if support else 0
            expected = (len(msg.tokens), k)
            if len(support) != len(msg.tokens) or any(len(row) != k for row in support) or not 0 < k <= self.vocab:
                raise ProtocolError("bad-request", f"draft support of {[len(r) for r in support]} ids a row, "
                                                   f"expected {len(msg.tokens)} rows of one length in 1..{self.vocab}")
            for row in support:
                self._ids(row, "draft support")
        if shape != expected:
            raise ProtocolError("bad-request", f"draft probabilities of shape {shape}, expected {expected}")

    def _draft(self, msg: DraftRequest) -> None:
        """One branch of a DRAFT: its length, ids and distributions."""
        if len(msg.tokens) > self.max_draft:
            raise ProtocolError("bad-request", f"draft of {len(msg.tokens)} tokens: at most {self.max_draft}")
        if msg.base + len(msg.tokens) + 1 > self.max_tokens:
            raise ProtocolError("bad-request", f"session would exceed {self.max_tokens} tokens")
        self._ids(msg.tokens, "draft")
        if msg.probs is not None:
            self._draft_probs(msg)

    def check(self, msg: object) -> None:
        if isinstance(msg, Start):
            if not 1 <= len(msg.input_ids) <= self.max_tokens:
                raise ProtocolError("bad-request", f"prompt of {len(msg.input_ids)} tokens: 1..{self.max_tokens} allowed")
            self._ids(msg.input_ids, "prompt")
        elif isinstance(msg, DraftRequest):
            if msg.branches and msg.assumes is None:
                raise ProtocolError("bad-request", "a DRAFT with branches must assume a verdict (fan-out pre-draft)")
            for branch in msg.each_branch():
                self._draft(branch)
        elif isinstance(msg, Generate):
            if msg.max_new_tokens > self.max_new or msg.base + msg.max_new_tokens > self.max_tokens:
                raise ProtocolError("bad-request", f"cloud decoding of {msg.max_new_tokens} tokens after {msg.base}: "
                                                   f"at most {self.max_new}, within {self.max_tokens} in all")
            self._ids(msg.stop_ids, "stop ids")


class VerifierServer:
    def __init__(self, engine: TargetEngine, config: ServerConfig = ServerConfig()):
        security.require_security(config.bind, bool(config.server_secret_key), config.insecure, "verifier bind")
        self.engine = engine
        self.config = config
        self.service = VerifierService(engine, config.idle_timeout_s, config.max_sessions,
                                       config.max_sessions_per_client, config.max_batch,
                                       config.max_queued_per_client, config.evictable_after_s)
        self.scheduler = self.service.scheduler
        self.limits = Limits(engine, config)
        self._handshakes = _Bucket(config.handshakes_per_s)
        self._images = ThreadPoolExecutor(config.image_workers, thread_name_prefix="image-decoder")
        self._decoding: set[bytes] = set()  # peers with an image in the pool
        self.sender = os.urandom(protocol.SENDER_BYTES)
        bundle = engine.bundle
        pacer = engine.pacer
        self.welcome = Welcome(bundle.tokenizer_fingerprint(), bundle.model_fingerprint(), engine.parts.num_layers,
                               list(engine.heads.layers) if engine.heads is not None else [], self.limits.vocab,
                               config.max_frame_bytes, pacer.profile.name if pacer is not None else "")
        self.counters: dict[str, int] = {"frames_in": 0, "frames_out": 0, "rounds": 0, "dropped_out": 0}
        self.compute = {"pass_s": 0.0, "tokens": 0}  # verification time (a shared pass split among its rows) and tokens committed
        self.endpoint = ""
        self._peers: dict[bytes, _Peer] = {}
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._auth = None
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None   # what killed the serving thread, if anything did
        self.stopped = threading.Event()            # set when the serving thread has ended, for any reason
        self._hooks: list = []
        self._last_io = 0.0

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> str:
        """Bind and start serving on a thread of its own; returns the bound endpoint (port 0 resolved)."""
        cfg = self.config
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.maxmsgsize = 4 * cfg.max_frame_bytes  # beyond this libzmq drops the connection
        self._router.sndhwm = self._router.rcvhwm = 10000
        if cfg.server_secret_key:
            self._auth = security.secure_server(self._ctx, self._router, cfg.server_secret_key,
                                                cfg.authorized_clients_dir)
        self._router.bind(cfg.bind)
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._hooks = [layer.register_forward_hook(self._io_hook) for layer in self.engine.parts.layers]
        self._log_limits()
        self._thread = threading.Thread(target=self._serve, name="verifier", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for h in self._hooks:
            h.remove()
        self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._images.shutdown(wait=False, cancel_futures=True)
        self._ctx.term()

    def stats(self) -> dict:
        """What the server holds now, for operators (`kill -USR1` on the verifier prints it) and the soak
        benchmark: sessions, connections, images being decoded, the frame and error counters, and how
        far real compute fell behind an emulated profile (`pacer_late_s`: 0 when this CPU kept up)."""
        peers = list(self._peers.values())
        pacer = self.engine.pacer
        return {"sessions": len(self.service.sessions), "connections": len(peers),
                "welcomed": sum(p.welcomed for p in peers), "decoding_images": len(self._decoding),
                **dict(self.counters), "pacer_late_s": round(pacer.late_s, 3) if pacer is not None else None}

    def live_connections(self, within_s: float) -> int:
        """Welcomed connections heard from in the last `within_s` (a fleet's load: robots placed here)."""
        now = time.monotonic()
        return sum(1 for p in list(self._peers.values()) if p.welcomed and now - p.seen <= within_s)

    def quiet_s(self) -> float:
        """Seconds since any robot's last frame (inf: none yet); read from other threads (a fleet's replica)."""
        seen = [p.seen for p in list(self._peers.values())]
        return time.monotonic() - max(seen) if seen else float("inf")

    def _log_limits(self) -> None:
        text_cfg = self.engine.bundle.model.config.get_text_config()
        heads = text_cfg.num_attention_heads
        kv_heads = getattr(text_cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // heads
        dtype_bytes = next(self.engine.bundle.model.parameters()).element_size()
        per_token = 2 * text_cfg.num_hidden_layers * kv_heads * head_dim * dtype_bytes
        per_session = per_token * self.limits.max_tokens / 2**20
        log.info("sessions hold at most %d tokens (KV cache <= %.1f MiB each, <= %.1f MiB for %d sessions); "
                 "idle sessions evicted after %.0f s", self.limits.max_tokens, per_session,
                 per_session * self.config.max_sessions, self.config.max_sessions, self.config.idle_timeout_s)

    # -- the loop --------------------------------------------------------------------------------
    def _serve(self) -> None:
        """The serving thread: a failure here is recorded and announced (`stopped`), so whoever runs
        the server ends the process instead of leaving it up and deaf."""
        try:
            self._loop()
        except BaseException as exc:
            self.failure = exc
            log.critical("the verifier's serving thread died: %s: %s", type(exc).__name__, exc, exc_info=exc)
        finally:
            self.stopped.set()

    def _loop(self) -> None:
        next_chores = time.monotonic() + 1.0
        while not self._stop.is_set():
            self._pump(0 if self.service.busy else self._poll_timeout_ms())
            if self._decoding:
                self._images_in()
            self.service.run_once()
            now = time.monotonic()
            if now >= next_chores:
                self.service.evict_idle()
                for peer in [p for p, st in self._peers.items() if now - st.seen > self.config.idle_timeout_s]:
                    self._forget(peer)
                next_chores = now + 1.0

    def _pump(self, timeout_ms: int) -> None:
        """Take in what has arrived (waiting up to `timeout_ms` for the first frame); never computes.

        Lean on purpose, as the client's: after a pass it runs with cold caches."""
        self._last_io = time.monotonic()
        if zmq.zmq_poll([(self._router, _POLLIN)], timeout_ms):
            router, copy = self._router, self._auth is None  # with CURVE, frames: they carry the client's key
            for _ in range(256):  # drain by ZMQ_EVENTS, not by catching zmq.Again (see the client)
                parts = [router.recv(_NOBLOCK)]
                while router.getsockopt(_RCVMORE):
                    parts.append(router.recv(_NOBLOCK, copy=copy))
                self._on_frame(parts)
                if not router.getsockopt(_EVENTS) & _POLLIN:
                    break
        held = [(peer, st) for peer, st in self._peers.items() if st.order.held]
        if held:
            now = time.monotonic()
            for peer, st in held:
                for msg in st.order.expire(now):
                    self._on_message(peer, st, msg)

    def _io_hook(self, _module, _inputs, _output) -> None:
        """Between decoder layers of a pass: service the socket if it has waited long enough.

        Only on the server's own thread: whoever else runs the model (a test's reference) never
        touches the socket."""
        if threading.current_thread() is self._thread and \
                time.monotonic() - self._last_io >= self.config.io_interval_s:
            self._pump(0)

    def _poll_timeout_ms(self) -> int:
        if self._decoding:
            return 1
        deadlines = [d for st in self._peers.values() if (d := st.order.deadline()) is not None]
        if not deadlines:
            return 200
        return max(0, min(200, int((min(deadlines) - time.monotonic()) * 1000) + 1))

    # -- sending ---------------------------------------------------------------------------------
    def _send(self, peer: bytes, st: _Peer, kind: str, body: bytes) -> None:
        data = protocol.frame(kind, body, st.out_seq, self.sender)
        st.out_seq += 1
        try:
            self._router.send(peer, _NOBLOCK | _SNDMORE)
            self._router.send(data, _NOBLOCK)
            self.counters["frames_out"] += 1
        except zmq.Again:  # the robot is not reading: its queue is full; it will time out and retry
            self.counters["dropped_out"] += 1

    def _send_msg(self, peer: bytes, st: _Peer, msg: object) -> None:
        self._send(peer, st, *protocol.pack_body(msg))

    def _error(self, peer: bytes, st: _Peer, code: str, text: str, session: str | None = None) -> None:
        self.counters[f"error:{code}"] = self.counters.get(f"error:{code}", 0) + 1
        log.debug("error to a peer: %s: %s", code, text)
        self._send_msg(peer, st, Error(code, text, session))

    def _replier(self, peer: bytes, st: _Peer):
        """The service's `reply` for one connection: put the frame on the wire (nowhere once the
        connection is gone or was taken over)."""
        def reply(msg: object) -> None:
            if self._peers.get(peer) is not st:
                return
            kind, body = protocol.pack_body(msg)
            self._send(peer, st, kind, body)
            if kind == "FINAL":
                self.counters["rounds"] += 1
                self.compute["pass_s"] += msg.compute_s / (msg.rows or 1)
                self.compute["tokens"] += msg.accepted + 1
                if self.config.log_rounds:
                    log.info("round %s/%d: %d tokens in the pass (shared by %d robots), %d accepted, compute %.1f ms",
                             msg.session, msg.round, msg.tokens_in_pass, msg.rows, msg.accepted, msg.compute_s * 1000)
            elif kind == "ERROR":
                self.counters[f"error:{msg.code}"] = self.counters.get(f"error:{msg.code}", 0) + 1
        return reply

    # -- receiving -------------------------------------------------------------------------------
    def _on_frame(self, parts: list) -> None:
        now = time.monotonic()
        peer = parts[0]
        st = self._peers.get(peer)
        key = None
        if self._auth is not None:  # the CURVE key the ZAP handler admitted this connection with
            key = parts[-1].get("User-Id")
            parts[1:] = [p.bytes for p in parts[1:]]
        if st is not None and key != st.key:  # the identity of a departed robot, reused by another key
            self._forget(peer)
            st = None
        if st is None:
            st = self._peers[peer] = _Peer(InOrder(self.config.reorder_wait_s), now, key=key)
        st.seen = now
        self.counters["frames_in"] += 1
        if len(parts) != 2:
            return self._error(peer, st, "bad-frame", f"a frame is one ZeroMQ part, got {len(parts) - 1}")
        try:
            env = protocol.unpack(parts[1], self.config.max_frame_bytes)
        except ProtocolError as exc:
            return self._error(peer, st, exc.code, str(exc))
        if env.kind not in protocol.ROBOT_TO_CLOUD:
            return self._error(peer, st, "bad-message", f"{env.kind} is sent by the cloud, not to it")
        if env.sender != st.sender:
            if st.sender is not None:  # another link under this identity: a fresh connection, nothing inherited
                self._forget(peer)
                st = self._peers[peer] = _Peer(InOrder(self.config.reorder_wait_s), now, key=key)
            st.sender = env.sender
        for msg in st.order.push(env.seq, env.msg, now):
            self._on_message(peer, st, msg)

    def _forget(self, peer: bytes) -> None:
        st = self._peers.pop(peer)
        self.service.drop_owner(st)

    def _on_message(self, peer: bytes, st: _Peer, msg: object) -> None:
        if isinstance(msg, Hello):
            return self._hello(peer, st, msg)
        if not st.welcomed:
            return self._error(peer, st, "hello-required", "send HELLO first (or again: the server restarted)")
        if isinstance(msg, Ping):
            if self.service.draining and not self.service.holds(st):  # a fleet's drain: this robot moves on
                return self._send_msg(peer, st, moved(None))
            return self._send_msg(peer, st, Pong(msg.sent))
        try:
            self.limits.check(msg)
        except ProtocolError as exc:
            return self._error(peer, st, exc.code, str(exc), msg.session)
        self._to_service(peer, st, msg)

    def _to_service(self, peer: bytes, st: _Peer, msg: object) -> None:
        """Submit to the service, in this peer's order: a PREFILL's image is decoded in the pool first,
        and the peer's later messages wait for it."""
        if st.decoding is not None:
            if len(st.held) >= self.config.max_queued_per_client:
                return self._error(peer, st, "busy", "too many requests wait behind an image", msg.session)
            return st.held.append(msg)
        image = getattr(msg, "image", None)
        if isinstance(image, bytes):
            h, w = protocol.check_jpeg(image)
            if h * w > self.config.max_image_pixels:
                return self._error(peer, st, "bad-request", f"image of {w}x{h} pixels: this cloud takes at "
                                   f"most {self.config.max_image_pixels}", msg.session)
            st.decoding = _Decoding(self._images.submit(protocol.decode_jpeg, image), msg,
                                    time.monotonic() + self.config.image_decode_timeout_s)
            self._decoding.add(peer)
            return
        self.service.submit(st, st.group, msg, self._replier(peer, st))

    def _images_in(self) -> None:
        """Peers whose image is decoded (or refused, or late): their PREFILL and what waited behind it go on."""
        now = time.monotonic()
        for peer in list(self._decoding):
            st = self._peers.get(peer)
            d = st.decoding if st is not None else None
            if d is None:
                self._decoding.discard(peer)
                continue
            if d.future.done():
                try:
                    d.msg.image = d.future.result()
                except ProtocolError as exc:
                    self._error(peer, st, exc.code, str(exc), d.msg.session)
                    d.msg = None
            elif now > d.deadline:
                d.future.cancel()
                self._error(peer, st, "bad-request", f"the image took longer than {self.config.image_decode_timeout_s:g}"
                            " s to decode", d.msg.session)
                d.msg = None
            else:
                continue
            st.decoding = None
            self._decoding.discard(peer)
            if d.msg is not None:
                self.service.submit(st, st.group, d.msg, self._replier(peer, st))
            held, st.held = st.held, deque()
            for msg in held:
                self._to_service(peer, st, msg)

    def _hello(self, peer: bytes, st: _Peer, hello: Hello) -> None:
        w = self.welcome
        if hello.tokenizer != w.tokenizer:
            st.welcomed = False
            return self._error(peer, st, "hello-mismatch", f"robot tokenizer {hello.tokenizer} differs from the "
                               f"cloud's {w.tokenizer}: speculative decoding needs one vocabulary")
        if hello.expect_model and hello.expect_model != w.model:
            st.welcomed = False
            return self._error(peer, st, "hello-mismatch", f"robot expects target {hello.expect_model}, "
                               f"this cloud serves {w.model}")
        if not st.welcomed:
            if not self._handshakes.take():
                return self._error(peer, st, "busy", "too many connections are starting: try again shortly")
            if st.key is not None:  # the key's newest connections win: a robot is never locked out by its dead ones
                mine = sorted((p for p, o in self._peers.items() if o.welcomed and o.key == st.key),
                              key=lambda p: self._peers[p].seen)
                for old in mine[:max(0, len(mine) + 1 - self.config.max_connections_per_client)]:
                    self._forget(old)
        st.welcomed, st.name = True, hello.name
        log.info("robot %r connected", hello.name)
        self._send_msg(peer, st, w)
