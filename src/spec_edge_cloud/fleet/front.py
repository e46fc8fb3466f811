"""A fleet's front: the one endpoint robots are given. It answers HELLO with the WELCOME of the
replica it assigns (`ReplicaPool.assign`, by load), carrying that replica's own endpoint in
`redirect`; the robot's link then says HELLO there and talks to that replica alone. So the front is
never on a round's path: an EARLY leaves the replica's socket from inside its pass, as with one
verifier process, and a replica lost does not stop the front assigning the others.

It holds no session and runs no model: HELLO (the tokenizer and target checked as a verifier does,
at `handshakes_per_s` at most), PING (answered), and anything else answered `hello-required`, so a
link that talks to it as to a replica goes back through the handshake. CURVE and the allow-list are
the verifier's own (`server_secret_key`, `authorized_clients_dir`), on the front and every replica.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import zmq

from ..decoding.messages import Error, Ping, Pong
from ..transport import protocol, security
from ..transport.protocol import Hello, ProtocolError, Welcome
from ..transport.server import ServerConfig, _Bucket

log = logging.getLogger(__name__)
MAX_PEERS = 4096  # sequence numbers kept for this many recent connections


class FleetFront:
    def __init__(self, pool, config: ServerConfig):
        security.require_security(config.bind, bool(config.server_secret_key), config.insecure, "fleet front bind")
        self.pool = pool
        self.config = config
        self.sender = os.urandom(protocol.SENDER_BYTES)
        self.counters = {"hellos": 0, "assigned": 0, "no_replica": 0, "lost": 0}  # lost: HELLOs naming a lost replica
        self._seq: OrderedDict[bytes, int] = OrderedDict()
        self._handshakes = _Bucket(config.handshakes_per_s)
        self._ctx = zmq.Context()
        self._auth = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    def start(self) -> str:
        cfg = self.config
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.maxmsgsize = 4 * cfg.max_frame_bytes
        if cfg.server_secret_key:
            self._auth = security.secure_server(self._ctx, self._router, cfg.server_secret_key,
                                                cfg.authorized_clients_dir)
        self._router.bind(cfg.bind)
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._serve, name="fleet-front", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._router.poll(200):
                continue
            parts = self._router.recv_multipart()
            try:
                self._on_frame(parts)
            except Exception:  # one robot's bad frame never stops the front
                log.exception("fleet front: a frame from a robot")

    def _send(self, peer: bytes, msg: object) -> None:
        seq = self._seq.pop(peer, 0)
        self._seq[peer] = seq + 1
        while len(self._seq) > MAX_PEERS:
            self._seq.popitem(last=False)
        try:
            self._router.send_multipart([peer, protocol.pack(msg, seq, self.sender)], zmq.NOBLOCK)
        except zmq.Again:
            pass  # that robot is not reading: it will say HELLO again

    def _on_frame(self, parts: list[bytes]) -> None:
        peer = parts[0]
        if len(parts) != 2:
            return self._send(peer, Error("bad-frame", f"a frame is one ZeroMQ part, got {len(parts) - 1}"))
        try:
            env = protocol.unpack(parts[1], self.config.max_frame_bytes)
        except ProtocolError as exc:
            return self._send(peer, Error(exc.code, str(exc)))
        if isinstance(env.msg, Ping):
            return self._send(peer, Pong(env.msg.sent))
        if not isinstance(env.msg, Hello):
            return self._send(peer, Error("hello-required", "this is a fleet's front: send HELLO to be given a "
                                                            "replica", getattr(env.msg, "session", None)))
        self._hello(peer, env.msg)

    def _hello(self, peer: bytes, hello: Hello) -> None:
        w = self.pool.welcome
        if hello.tokenizer != w["tokenizer"]:
            return self._send(peer, Error("hello-mismatch", f"robot tokenizer {hello.tokenizer} differs from the "
                                          f"cloud's {w['tokenizer']}: speculative decoding needs one vocabulary"))
        if hello.expect_model and hello.expect_model != w["model"]:
            return self._send(peer, Error("hello-mismatch", f"robot expects target {hello.expect_model}, this "
                                          f"cloud serves {w['model']}"))
        if not self._handshakes.take():
            return self._send(peer, Error("busy", "too many connections are starting: try again shortly"))
        self.counters["hellos"] += 1
        self.counters["lost"] += bool(hello.lost)
        endpoint = self.pool.assign(avoid=hello.lost)
        if endpoint is None:
            self.counters["no_replica"] += 1
            return self._send(peer, Error("busy", "no verifier replica is up: try again shortly"))
        self.counters["assigned"] += 1
        log.info("robot %r sent to %s", hello.name, endpoint)
        self._send(peer, Welcome(**{**w, "redirect": endpoint}))


def open_fleet(fleet, model: dict, server: dict) -> tuple["FleetFront", object]:
    """Start a fleet: its replicas (serving `server`'s settings on `fleet.replica_bind`) and its front
    (on `server`'s bind); returns (front, pool), both started."""
    front_config = ServerConfig.from_params(server)
    for bind, role in ((front_config.bind, "fleet front bind"), (fleet.replica_bind, "replica_bind")):
        security.require_security(bind, bool(front_config.server_secret_key), front_config.insecure, role)
    from .pool import ReplicaPool  # Ray: only now
    pool = ReplicaPool(fleet, model, {**server, "bind": fleet.replica_bind})
    pool.start()
    front = FleetFront(pool, front_config)
    try:
        front.start()
    except BaseException:
        pool.close()
        raise
    return front, pool
