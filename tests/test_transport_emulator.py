"""The link emulator between two real ZeroMQ sockets: delay, jitter order, bandwidth, whole-message loss."""
from __future__ import annotations

import statistics
import time

import pytest
import zmq

from spec_edge_cloud.transport import security
from spec_edge_cloud.transport.emulator import LinkEmulator, LinkSpec


@pytest.fixture
def pair(tmp_path):
    """(connect through an emulator with this spec) -> (dealer, router, emulator); CURVE if asked."""
    ctx = zmq.Context()
    made = []

    def make(spec: LinkSpec, curve: bool = False, seed: int = 0):
        router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        if curve:
            _, server_secret = security.generate(tmp_path, "server")
            robot_public, robot_secret = security.generate(tmp_path / "robots", "robot")
            made.append(security.secure_server(ctx, router, server_secret, tmp_path / "robots"))
            security.secure_client(dealer, robot_secret, tmp_path / "server.key")
        port = router.bind_to_random_port("tcp://127.0.0.1")
        emu = LinkEmulator("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{port}", spec, seed=seed).start()
        dealer.connect(emu.endpoint)
        made.extend([router, dealer, emu])
        return dealer, router, emu

    yield make
    for m in made:
        m.stop() if hasattr(m, "stop") else m.close(0)
    ctx.term()


def ping(dealer, router, payload: bytes = b"x", reply: bytes = b"y") -> float:
    t = time.perf_counter()
    dealer.send(payload)
    assert router.poll(5000)
    ident, _ = router.recv_multipart()
    router.send_multipart([ident, reply])
    assert dealer.poll(5000)
    dealer.recv()
    return time.perf_counter() - t


def test_round_trip_delay(pair):
    dealer, router, _ = pair(LinkSpec(rtt_s=0.06))
    ping(dealer, router)  # connection set-up
    rtts = [ping(dealer, router) for _ in range(10)]
    assert 0.06 <= statistics.median(rtts) <= 0.075, rtts


def test_jitter_never_reorders(pair):
    dealer, router, _ = pair(LinkSpec(rtt_s=0.02, jitter_s=0.03), seed=3)
    for i in range(200):
        dealer.send(str(i).encode())
    got = []
    while len(got) < 200 and router.poll(2000):
        got.append(int(router.recv_multipart()[1]))
    assert got == list(range(200))


def test_bandwidth_limit(pair):
    dealer, router, _ = pair(LinkSpec(bandwidth_bps=16e6))
    ping(dealer, router)
    t = ping(dealer, router, payload=bytes(200_000))  # 1.6 Mbit at 16 Mbit/s: 100 ms up
    assert 0.095 <= t <= 0.16, t


@pytest.mark.parametrize("curve", [False, True])
def test_loss_drops_whole_messages_only(pair, curve):
    dealer, router, emu = pair(LinkSpec(rtt_s=0.002, loss=0.3), curve=curve, seed=7)
    ping_ok = False
    for _ in range(20):  # the handshake is never dropped; the first message may be
        dealer.send(b"hello")
        if router.poll(200):
            router.recv_multipart()
            ping_ok = True
            break
    assert ping_ok
    n = 400
    for i in range(n):
        dealer.send(str(i).encode() * 50)
    got = []
    while router.poll(500):
        got.append(router.recv_multipart()[1])
    numbers = [int(g[: len(g) // 50]) for g in got]
    assert all(g == str(k).encode() * 50 for g, k in zip(got, numbers)), "a message arrived damaged"
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert 0.6 * n <= len(got) <= 0.8 * n, len(got)       # 30% loss, binomial spread
    assert emu.stats.dropped["up"] == emu.stats.messages["up"] - len(got) - 1
