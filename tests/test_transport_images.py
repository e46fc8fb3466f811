"""Image bombs cost their sender, not the fleet: JPEG headers bound the work before anything is
decoded (pixels, scans), and pixels are decoded off the serving thread, one image at a time per
peer, with a time limit. Issue 19: one 234 KB progressive JPEG whose last scan repeated 3000 times
held the server's only thread in `cv2.imdecode` for 38 s, and every robot fell back to the edge."""
from __future__ import annotations

import statistics
import threading
import time

import cv2
import numpy as np
import pytest

from spec_edge_cloud.decoding.messages import DraftRequest, Error, Final, Start
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.modeling import jpeg
from spec_edge_cloud.modeling.tiny import tiny_bundle
from spec_edge_cloud.transport import protocol
from spec_edge_cloud.transport.protocol import ProtocolError
from test_transport_sessions import PROMPT, Peer, serve


def progressive(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def scan_bomb(side: int, repeats: int) -> bytes:
    """A flat progressive JPEG whose last scan is repeated `repeats` times: small, slow to decode."""
    data = progressive(np.full((side, side, 3), 128, np.uint8))
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


@pytest.fixture(scope="module")
def vlm():
    return TargetEngine(tiny_bundle("qwen", seed=6, layers=2))


def test_headers_bound_the_work_before_decoding():
    bomb = scan_bomb(4096, 3000)
    assert len(bomb) < 400_000
    t0 = time.perf_counter()
    with pytest.raises(ProtocolError, match="scans"):
        protocol.check_jpeg(bomb)
    assert time.perf_counter() - t0 < 0.5, "reading the headers must be cheap"
    with pytest.raises(ProtocolError, match="scans"):
        protocol.check_jpeg(scan_bomb(256, 100))
    flat = progressive(np.full((4096, 4096, 3), 128, np.uint8))  # 51 MB once decoded
    with pytest.raises(ProtocolError, match="pixels"):
        protocol.check_jpeg(flat)
    ok = progressive(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8))
    assert protocol.check_jpeg(ok) == (480, 640) and protocol.decode_jpeg(ok).shape == (480, 640, 3)


def rounds_of(engine, endpoint: str, n: int) -> list[float]:
    """Round times of a well-behaved robot: a PREFILL with a camera frame, then `n` rounds."""
    p = Peer(endpoint)
    times = []
    try:
        p.hello(engine.bundle.tokenizer_fingerprint())
        frame = jpeg.encode(np.random.default_rng(1).integers(0, 255, (112, 112, 3), np.uint8))
        prompt = engine.bundle.encode("w3 w4", protocol.decode_jpeg(frame))
        p.send(Start("good", prompt.input_ids, frame))
        base = len(prompt.input_ids)
        for rnd in range(n):
            t0 = time.perf_counter()
            p.send(DraftRequest("good", rnd, base, [7], exit_layers=[]))
            final = p.until(Final, 10.0)
            assert final is not None, f"round {rnd} of the good robot was never answered"
            times.append(time.perf_counter() - t0)
            base += final.accepted + 1
    finally:
        p.close()
    return times


def test_bombs_and_big_images_cost_their_sender_not_the_fleet(vlm):
    server, endpoint = serve(vlm)
    tok = vlm.bundle.tokenizer_fingerprint()
    try:
        unloaded = rounds_of(vlm, endpoint, 10)
        bomb = scan_bomb(4096, 3000)
        big = progressive(np.random.default_rng(2).integers(0, 255, (1024, 2048, 3), np.uint8))  # legal, 2 Mpx
        replies: list = []

        def bomber() -> None:
            p = Peer(endpoint)
            for i in range(12):
                p.send(Start(f"pre{i}", PROMPT, bomb))           # before any HELLO
            p.send(protocol.Hello(tok))
            for i in range(12):
                p.send(Start(f"b{i}", PROMPT, bomb))
                p.send(Start(f"big{i}", PROMPT, big))
            while (msg := p.recv(3.0)) is not None:
                replies.append(msg.code if isinstance(msg, Error) else type(msg).__name__)
            p.close()
        attack = threading.Thread(target=bomber)
        attack.start()
        loaded = rounds_of(vlm, endpoint, 10)
        attack.join(60)
        assert replies.count("bad-message") == 24 and "Welcome" in replies, replies  # bombs refused from their headers
        assert not server.stopped.is_set()
        assert max(loaded) < 2.0, loaded
        assert statistics.median(loaded) < 2 * statistics.median(unloaded) + 0.05, (unloaded, loaded)
    finally:
        server.stop()


def test_an_image_slower_than_the_time_limit_is_refused_and_its_sender_goes_on(vlm):
    server, endpoint = serve(vlm, image_decode_timeout_s=0.01)
    p = Peer(endpoint)
    try:
        p.hello(vlm.bundle.tokenizer_fingerprint())
        slow = progressive(np.random.default_rng(3).integers(0, 255, (1024, 2048, 3), np.uint8))
        t0 = time.perf_counter()
        protocol.decode_jpeg(slow)
        assert time.perf_counter() - t0 > 0.02, "this machine decodes too fast for the test's point"
        p.send(Start("slow", PROMPT, slow))
        p.send(Start("next", PROMPT))                 # waits behind the image, then goes on
        p.send(DraftRequest("next", 0, len(PROMPT), [7], exit_layers=[]))
        err = p.until(Error)
        assert err.session == "slow" and "longer than" in err.text, err
        assert isinstance(p.until(Final), Final)
    finally:
        p.close(), server.stop()
