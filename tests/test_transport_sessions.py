"""Sessions on the cloud: admission (a full cloud refuses, never evicts a live session), binding to
the peer that created them (plaintext and CURVE, a departed robot's identity reused), idempotent
rounds, the per-peer queue cap, and the one cancel path. Real ZeroMQ sockets on loopback against an
in-process server on a tiny target, with hand-written frames where a robot would never send them."""
from __future__ import annotations

import os
import time

import pytest
import zmq

from decoding_fixtures import perturbed, target_alone
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.messages import DraftRequest, End, Error, Final, Generate, Start, Token
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.bundle import Prompt
from spec_edge_cloud.modeling.tiny import tiny_bundle
from spec_edge_cloud.transport import protocol, security
from spec_edge_cloud.transport.client import LinkOptions, ZmqLink
from spec_edge_cloud.transport.protocol import Hello
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer

PROMPT = [3, 4, 5, 6]


@pytest.fixture(scope="module")
def engine():
    return TargetEngine(tiny_bundle("llama", seed=5, layers=2))


class Peer:
    """A hand-driven DEALER: any routing identity, any sender, optional CURVE keys."""

    def __init__(self, endpoint: str, identity: bytes | None = None, keys: tuple | None = None):
        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.DEALER)
        self.s.linger = 0
        if identity is not None:
            self.s.routing_id = identity
        if keys is not None:
            security.secure_client(self.s, *keys)
        self.s.connect(endpoint)
        self.sender, self.seq = os.urandom(protocol.SENDER_BYTES), 0

    def send(self, msg: object) -> None:
        self.s.send(protocol.pack(msg, self.seq, self.sender))
        self.seq += 1

    def recv(self, timeout: float = 5.0) -> object | None:
        if not self.s.poll(int(timeout * 1000)):
            return None
        return protocol.unpack(self.s.recv()).msg

    def until(self, kind: type, timeout: float = 5.0) -> object | None:
        """The next message of `kind` (others skipped); None if none comes in time."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if isinstance(msg, kind):
                return msg
        return None

    def hello(self, tokenizer: str) -> None:
        self.send(Hello(tokenizer, name="test"))
        assert isinstance(self.recv(), protocol.Welcome)

    def close(self) -> None:
        self.s.close(0)
        self.ctx.term()


def serve(engine, **config):
    server = VerifierServer(engine, ServerConfig(bind="tcp://127.0.0.1:0", log_rounds=False, **config))
    return server, server.start()


def test_a_full_cloud_refuses_a_new_session_and_keeps_the_live_ones(engine):
    """Old behaviour: another robot's live session was evicted, silently, to make room."""
    server, endpoint = serve(engine, max_sessions=2, evictable_after_s=1.0)
    tok = engine.bundle.tokenizer_fingerprint()
    a, b = Peer(endpoint), Peer(endpoint)
    try:
        a.hello(tok)
        b.hello(tok)
        a.send(Start("a1", PROMPT))
        a.send(Start("a2", PROMPT))
        a.send(DraftRequest("a1", 0, len(PROMPT), [7], exit_layers=[]))
        assert isinstance(a.until(Final), Final)
        b.send(Start("b1", PROMPT))
        err = b.recv()
        assert isinstance(err, Error) and err.code == "busy" and err.session == "b1", err
        a.send(DraftRequest("a2", 0, len(PROMPT), [7], exit_layers=[]))
        assert isinstance(a.until(Final), Final), "a live session was taken"
        time.sleep(1.2)  # both of a's sessions are idle now: the longest-idle one may go, its owner told
        b.send(Start("b1", PROMPT))
        b.send(DraftRequest("b1", 0, len(PROMPT), [7], exit_layers=[]))
        assert isinstance(b.until(Final), Final)
        evicted = a.until(Error)
        assert evicted.code == "evicted" and evicted.session == "a1", evicted
    finally:
        a.close(), b.close(), server.stop()


def one_round_then_leave(robot: Peer, tok: str) -> Peer:
    robot.hello(tok)
    robot.send(Start("s", PROMPT))
    robot.send(DraftRequest("s", 0, len(PROMPT), [7], exit_layers=[]))
    assert isinstance(robot.until(Final), Final)
    robot.close()
    time.sleep(0.3)
    return robot


def test_a_peer_reusing_a_departed_robots_identity_inherits_nothing(engine):
    """Plaintext: the session is bound to the link that said HELLO (its sender), not to the identity."""
    server, endpoint = serve(engine)
    tok = engine.bundle.tokenizer_fingerprint()
    identity = b"\x016b8b4567"  # an identity the thief learnt
    one_round_then_leave(Peer(endpoint, identity), tok)
    thief = Peer(endpoint, identity)
    try:
        thief.send(DraftRequest("s", 1, len(PROMPT) + 1, [8], exit_layers=[]))
        err = thief.until(Error)
        assert err.code == "hello-required", err
        thief.hello(tok)
        thief.send(DraftRequest("s", 1, len(PROMPT) + 1, [8], exit_layers=[]))
        err = thief.until(Error)
        assert err.code == "unknown-session", err
        assert identity.hex() not in err.text and "6b8b4567" not in err.text
        assert not server.service.sessions, "the departed robot's session outlived its connection"
    finally:
        thief.close(), server.stop()


def test_with_curve_sessions_are_bound_to_the_key_that_made_them(engine, tmp_path):
    server_pub, server_sec = security.generate(tmp_path, "server")
    keys = {}
    for name in ("robot", "other"):
        pub, sec = security.generate(tmp_path, name)
        security.authorize(pub, tmp_path / "clients")
        keys[name] = (sec, server_pub)
    server, endpoint = serve(engine, server_secret_key=str(server_sec), authorized_clients_dir=str(tmp_path / "clients"))
    tok = engine.bundle.tokenizer_fingerprint()
    identity = b"\x01robot-identity"
    robot = one_round_then_leave(Peer(endpoint, identity, keys["robot"]), tok)
    thief = Peer(endpoint, identity, keys["other"])
    try:
        thief.sender = robot.sender  # even the departed link's sender: the key gives it away
        thief.send(DraftRequest("s", 1, len(PROMPT) + 1, [8], exit_layers=[]))
        assert thief.until(Error).code == "hello-required"
        thief.hello(tok)
        thief.send(DraftRequest("s", 1, len(PROMPT) + 1, [8], exit_layers=[]))
        assert thief.until(Error).code == "unknown-session"
        assert thief.until(Final, 0.5) is None
    finally:
        thief.close(), server.stop()


def test_links_choose_random_routing_identities():
    links = [ZmqLink("tcp://127.0.0.1:9", "tok", LinkOptions(handshake_timeout_s=0.1)) for _ in range(2)]
    try:
        ids = [link._dealer.routing_id for link in links]
        assert len(set(ids)) == 2 and all(len(i) == 16 and i[0] != 0 for i in ids)
    finally:
        for link in links:
            link.close()


@pytest.fixture
def started(engine):
    """A server and a welcomed peer whose session "s" has been sent its PREFILL."""
    server, endpoint = serve(engine)
    p = Peer(endpoint)
    p.hello(engine.bundle.tokenizer_fingerprint())
    p.send(Start("s", PROMPT))
    yield server, p
    p.close()
    server.stop()


def test_a_refused_draft_leaves_its_round_number_for_the_corrected_one(started):
    """Old behaviour: the refused DRAFT used up round 0, so the corrected round 0 was never answered."""
    _, p = started
    p.send(DraftRequest("s", 0, 99, [7], exit_layers=[]))           # a base beyond the committed tokens
    assert p.until(Error).code == "bad-request"
    p.send(DraftRequest("s", 0, len(PROMPT), [7], exit_layers=[]))  # corrected, same round
    final = p.until(Final)
    assert final is not None and final.round == 0
    p.send(DraftRequest("s", 1, len(PROMPT) + 1, [7], assumes=(0, 99, 99), exit_layers=[]))  # a missed pre-draft
    p.send(DraftRequest("s", 1, len(PROMPT) + final.accepted + 1, [7], exit_layers=[]))
    again = p.until(Final)
    assert again is not None and again.round == 1


def test_a_draft_repeated_while_queued_is_dropped_and_after_its_final_is_answered_from_memory(engine):
    """Driven turn by turn, so "queued" is certain: the copy that arrives while the first waits is
    dropped (its FINAL is coming), the copy after the FINAL gets the same FINAL again, unverified."""
    service = VerifierService(engine)
    out: list = []
    draft = DraftRequest("s", 0, len(PROMPT), [7, 8], exit_layers=[])
    service.submit("robot", "robot", Start("s", PROMPT), out.append)
    service.submit("robot", "robot", draft, out.append)
    service.submit("robot", "robot", draft, out.append)
    while service.run_once():
        pass
    finals = [m for m in out if isinstance(m, Final)]
    assert len(finals) == 1
    service.submit("robot", "robot", draft, out.append)
    while service.run_once():
        pass
    again = [m for m in out if isinstance(m, Final)]
    assert again == finals * 2
    assert sum(service.scheduler.batches.values()) == 1, service.scheduler.batches  # the one verifying pass


def test_a_repeated_draft_over_the_socket_gets_the_same_final_and_is_verified_once(started):
    server, p = started
    draft = DraftRequest("s", 0, len(PROMPT), [7, 8], exit_layers=[])
    p.send(draft)
    first = p.until(Final)
    p.send(draft)                         # a retry after the FINAL was lost on the way: sent again
    second = p.until(Final)
    assert first is not None and first == second
    assert p.until(Final, 0.3) is None
    assert sum(server.scheduler.batches.values()) == 1, server.scheduler.batches


def test_a_peer_with_too_much_queued_work_is_told_busy(engine):
    server, endpoint = serve(engine, max_queued_per_client=4, max_sessions_per_client=64)
    p = Peer(endpoint)
    try:
        p.hello(engine.bundle.tokenizer_fingerprint())
        for i in range(40):
            p.send(Start(f"s{i}", PROMPT * 20))
        codes = []
        while (msg := p.recv(1.0)) is not None:
            codes.append(msg.code if isinstance(msg, Error) else type(msg).__name__)
        assert codes.count("busy") >= 20, codes
        assert len(server.service.sessions) <= 40 - codes.count("busy")
    finally:
        p.close(), server.stop()


def test_end_is_the_one_cancel_path_and_stops_a_running_stream(engine):
    """Driven as every transport drives it: END taken at arrival drops the queued work and stops the
    running stream before its next pass; the session is gone."""
    service = VerifierService(engine)
    out: list = []
    service.submit("robot", "robot", Start("s", PROMPT), out.append)
    service.submit("robot", "robot", Generate("s", 0, len(PROMPT), 200), out.append)
    service.submit("robot", "robot", DraftRequest("s", 1, len(PROMPT), [7]), out.append)  # queued behind it
    for _ in range(5):
        service.run_once()
    service.submit("robot", "robot", End("s"), out.append)
    while service.run_once():
        pass
    tokens = [m for m in out if isinstance(m, Token)]
    assert 1 <= len(tokens) <= 5 and not [m for m in out if isinstance(m, (Final, Error))], out
    assert not service.sessions and not service.busy


def test_sessions_that_never_had_a_round_make_room_soon(engine):
    """A PREFILL flood fills the cloud with sessions that never draft: after UNPROVEN_S they give way
    to a robot that does (the flood benchmark's case), while sessions with rounds keep their place."""
    server, endpoint = serve(engine, max_sessions=2, evictable_after_s=30.0)
    tok = engine.bundle.tokenizer_fingerprint()
    flood, good = Peer(endpoint), Peer(endpoint)
    try:
        flood.hello(tok)
        good.hello(tok)
        flood.send(Start("f1", PROMPT))
        flood.send(Start("f2", PROMPT))
        time.sleep(0.3)
        good.send(Start("g", PROMPT))
        assert good.until(Error).code == "busy"        # too soon: they might still draft
        time.sleep(1.0)
        good.send(Start("g", PROMPT))
        good.send(DraftRequest("g", 0, len(PROMPT), [7], exit_layers=[]))
        assert isinstance(good.until(Final), Final)
        assert flood.until(Error).code == "evicted"
        flood.send(Start("f3", PROMPT))                   # the good robot's session has had a round
        assert flood.until(Error).code in ("busy", "evicted")
        assert flood.until(Final, 0.3) is None and any(sid == "g" for _, sid in server.service.sessions)
    finally:
        flood.close(), good.close(), server.stop()


def test_hellos_beyond_the_handshake_rate_are_told_busy_and_welcomed_later(engine):
    """Issue 19, item 2: a flood of connections kept the one serving thread busy; HELLOs are now taken
    at `handshakes_per_s` (a burst of as many), the others told `busy` at no cost."""
    server, endpoint = serve(engine, handshakes_per_s=2.0)
    tok = engine.bundle.tokenizer_fingerprint()
    peers = [Peer(endpoint) for _ in range(5)]
    try:
        for p in peers:
            p.send(Hello(tok, name="flood"))
        answers = [p.recv() for p in peers]
        welcomed = [p for p, a in zip(peers, answers) if isinstance(a, protocol.Welcome)]
        refused = [p for p, a in zip(peers, answers) if isinstance(a, Error) and a.code == "busy"]
        assert len(welcomed) == 2 and len(refused) == 3, answers
        time.sleep(0.6)  # the bucket refills: one more handshake
        refused[0].hello(tok)
    finally:
        for p in peers:
            p.close()
        server.stop()


def test_a_curve_key_holds_at_most_its_connections_and_sessions(engine, tmp_path):
    """Issue 19, item 2: caps per authenticated peer. One robot key opening a third connection makes
    room by ending its least recently heard one (never locked out by its dead ones); its sessions,
    across connections, are capped too (its own oldest gives way, its owner told), never another's."""
    server_pub, server_sec = security.generate(tmp_path, "server")
    pub, sec = security.generate(tmp_path, "robot")
    security.authorize(pub, tmp_path / "clients")
    server, endpoint = serve(engine, server_secret_key=str(server_sec), authorized_clients_dir=str(tmp_path / "clients"),
                             max_connections_per_client=2, max_sessions_per_client=2)
    tok = engine.bundle.tokenizer_fingerprint()
    conns = []
    try:
        for i in range(2):
            c = Peer(endpoint, keys=(sec, server_pub))
            c.hello(tok)
            c.send(Start(f"s{i}", PROMPT))
            c.send(DraftRequest(f"s{i}", 0, len(PROMPT), [7], exit_layers=[]))
            assert isinstance(c.until(Final), Final)
            conns.append(c)
            time.sleep(0.1)
        third = Peer(endpoint, keys=(sec, server_pub))
        conns.append(third)
        third.hello(tok)                                    # the key's oldest connection made room
        conns[0].send(DraftRequest("s0", 1, len(PROMPT) + 1, [7], exit_layers=[]))
        assert conns[0].until(Error).code == "hello-required"
        conns[1].send(DraftRequest("s1", 1, len(PROMPT) + 1, [7], exit_layers=[]))
        assert isinstance(conns[1].until(Final), Final)     # the other one goes on
        third.send(Start("t1", PROMPT))                     # the key's second session
        third.send(DraftRequest("t1", 0, len(PROMPT), [7], exit_layers=[]))
        assert isinstance(third.until(Final), Final)
        third.send(Start("t2", PROMPT))                     # a third: the key's own oldest session makes room
        third.send(DraftRequest("t2", 0, len(PROMPT), [7], exit_layers=[]))
        assert isinstance(third.until(Final), Final)
        err = conns[1].until(Error)
        assert err.code == "evicted" and err.session == "s1", err
        assert len(server.service.sessions) == 2, server.service.sessions
    finally:
        for c in conns:
            c.close()
        server.stop()


def test_a_request_the_cloud_refuses_finishes_on_the_robot_saying_why(engine):
    """Soak finding: an ERROR answering a response's request (`bad-request` on a degraded link) raised
    out of SpecClient. Here the cloud refuses rounds past its session limit of 12 tokens, and cloud
    decoding of 20: each response finishes on the robot, unverified from the refused request on, with
    the ERROR as its reason, and what the cloud verified before is the target's."""
    server, endpoint = serve(engine, max_session_tokens=len(PROMPT) + 8)
    draft = perturbed(tiny_bundle("llama", seed=5, layers=2), 0.3, 7)  # the target's twin, perturbed
    ref = target_alone(engine.bundle, Prompt(PROMPT), 20)
    assert len(ref) == 20  # no end of sequence before the limit: every mode must hit it
    link = ZmqLink(endpoint, draft.tokenizer_fingerprint())
    try:
        assert link.wait_up(5)
        for mode in ("spec", "spec-ee-pre", "cloud"):
            client = SpecClient(draft, link, DecodeConfig(mode=mode, max_new_tokens=20, deadline_s=5.0))
            resp = client.generate(Prompt(list(PROMPT)))
            m = resp.metrics
            assert not resp.verified and len(resp.tokens) == 20, (mode, m.fallback_reason)
            assert m.fallback_reason.startswith("cloud refused: bad-request: "), (mode, m.fallback_reason)
            assert (m.unverified_from == 0) if mode == "cloud" else (0 < m.unverified_from <= 8), (mode, m)
            assert resp.tokens[:m.unverified_from] == ref[:m.unverified_from], mode
        for _ in range(40):  # each refused response still ends its session (END is on its way)
            if not server.service.sessions:
                break
            time.sleep(0.05)
        assert not server.service.sessions, server.service.sessions
    finally:
        link.close(), server.stop()
