"""The wire schema, sequence ordering, ZMTP splitting and security policy, without any server."""
from __future__ import annotations

import os

import msgspec
import numpy as np
import pytest
import torch
import zmq

from decoding_fixtures import random_image
from spec_edge_cloud.decoding.messages import (Cancel, DraftRequest, Early, End, Error, Final, Generate, Ping, Pong,
                                               Start, Token)
from spec_edge_cloud.modeling import jpeg
from spec_edge_cloud.transport import protocol, security
from spec_edge_cloud.transport.client import LinkOptions, ZmqLink
from spec_edge_cloud.transport.emulator import parse_duration, parse_loss, parse_rate
from spec_edge_cloud.transport.ordering import InOrder
from spec_edge_cloud.transport.protocol import Hello, ProtocolError, Welcome, WireOptions
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer
from spec_edge_cloud.transport.zmtp import ZmtpSplitter

SENDER = os.urandom(protocol.SENDER_BYTES)
MESSAGES = [
    Hello("abc", "d1", "", "robot"), Welcome("abc", "m1", 28, [7, 14], 151_000, 1 << 20, "go2-orin-a100"),
    Start("s1", [1, 2, 3], None, 0.7, 42), DraftRequest("s1", 3, 10, [4, 5], None, (2, 1, 9), [7], 0.5),
    DraftRequest("s1", 4, 12, [], None, None, None, 0.0), Generate("s1", 5, 12, 30, [2]), Cancel("s1"), End("s1"),
    Ping(123.5), Pong(123.5), Early("s1", 3, 7, 1, 9, 0.93), Final("s1", 3, 1, 9, 0.62, 3, [(7, 1, 9), (14, 1, 9)]),
    Token("s1", 5, 0, 17, 0.02), Error("unknown-session", "no session", "s1"), Error("bad-frame", "garbage"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(msg):
    env = protocol.unpack(protocol.pack(msg, 7, SENDER))
    assert (env.kind, env.seq, env.sender) == (protocol.KIND_OF[type(msg)], 7, SENDER)
    assert env.msg == msg


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-3)])
def test_draft_probabilities_travel_as_raw_floats(dtype, tol):
    probs = torch.softmax(torch.randn(4, 300), -1)
    msg = DraftRequest("s", 0, 3, [1, 2, 3, 4], probs)
    data = protocol.pack(msg, 0, SENDER, WireOptions(probs_dtype=dtype))
    assert len(data) < probs.numel() * (4 if dtype == "float32" else 2) + 200
    got = protocol.unpack(data).msg.probs
    assert got.dtype == torch.float32 and got.shape == probs.shape
    assert torch.allclose(got, probs, atol=tol, rtol=0) if tol else torch.equal(got, probs)


def test_jpeg_roundtrip_gives_both_sides_the_same_pixels():
    image = random_image(3)
    pixels, data = jpeg.roundtrip(image, quality=80)
    assert pixels.shape == image.shape and not np.array_equal(pixels, image)  # JPEG is lossy
    got = protocol.decode_jpeg(protocol.unpack(protocol.pack(Start("s", [1], data), 0, SENDER)).msg.image)
    assert np.array_equal(got, pixels), "the cloud must decode exactly what the robot drafted on"
    smooth = np.zeros((64, 96, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 96, dtype=np.uint8)   # red ramp: channel order must survive
    fresh = protocol.decode_jpeg(protocol.unpack(protocol.pack(Start("s", [1], smooth), 0, SENDER)).msg.image)
    assert fresh.shape == smooth.shape and np.abs(fresh.astype(int) - smooth).mean() < 3


def body(kind: str, **fields) -> bytes:
    return protocol.frame(kind, msgspec.msgpack.encode(fields), 0, SENDER)


@pytest.mark.parametrize("data,code,words", [
    (b"", "bad-frame", "msgpack"),
    (b"\x93\x01\x02", "bad-frame", "msgpack"),
    (msgspec.msgpack.encode([1, 2, 3]), "bad-frame", "[version, kind, seq, sender, body]"),
    (msgspec.msgpack.encode([2, "PING", 0, SENDER, {"sent": 1.0}]), "bad-version", "speaks 1"),
    (msgspec.msgpack.encode([1, "NOPE", 0, SENDER, {}]), "bad-frame", "unknown kind"),
    (msgspec.msgpack.encode([1, "PING", -1, SENDER, {"sent": 1.0}]), "bad-frame", "seq"),
    (msgspec.msgpack.encode([1, "PING", 0, b"short", {"sent": 1.0}]), "bad-frame", "sender"),
    (msgspec.msgpack.encode([1, "PING", 0, SENDER, [1.0]]), "bad-frame", "PING body must be a map"),
    (body("PING"), "bad-message", "PING.sent: missing"),
    (body("PING", sent="now"), "bad-message", "PING.sent"),
    (body("PING", sent=float("inf")), "bad-message", "PING.sent: Expected `float` <= 1e+30"),
    (body("PING", sent=float("nan")), "bad-message", "PING.sent"),
    (body("PING", sent=True), "bad-message", "got `bool`"),
    (body("END", session="a/b"), "bad-message", "session"),
    (body("END", session=""), "bad-message", "session"),
    (body("DRAFT", session="s", round=-1, base=0, tokens=[], exit_threshold=0.0), "bad-message", "DRAFT.round"),
    (body("DRAFT", session="s", round=0, base=0, tokens=[1, -2], exit_threshold=0.0), "bad-message", "tokens"),
    (body("DRAFT", session="s", round=0, base=0, tokens=[1], exit_threshold=0.0, assumes=[1, 2]), "bad-message",
     "assumes"),
    (body("DRAFT", session="s", round=0, base=0, tokens=[1], exit_threshold=0.0,
          probs={"dtype": "float64", "shape": [1], "data": b"\0" * 8}), "bad-message", "dtype"),
    (body("DRAFT", session="s", round=0, base=0, tokens=[1], exit_threshold=0.0,
          probs={"dtype": "float32", "shape": [2, 2], "data": b"\0" * 8}), "bad-message", "cannot hold"),
    (body("DRAFT", session="s", round=0, base=0, tokens=[1], exit_threshold=0.0,
          probs={"dtype": "float32", "shape": [2]}), "bad-message", "DRAFT.probs.data: missing"),
    (body("DRAFT", session="s", round=0, base=0, tokens=[1], exit_threshold=0.0,
          probs={"dtype": "float32", "shape": [1], "data": np.float32([np.nan]).tobytes()}), "bad-message",
     "finite"),
    (body("PREFILL", session="s", input_ids=[1], temperature=0.0, seed=0, image=b"not a jpeg"), "bad-message",
     "JPEG"),
    # a 60000 x 60000 JPEG header in a few bytes: refused before any decoding
    (body("PREFILL", session="s", input_ids=[1], temperature=0.0, seed=0,
          image=b"\xff\xd8\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03" + bytes(20)), "bad-message", "60000x60000"),
])
def test_bad_frames_raise_protocol_errors_that_say_what_is_wrong(data, code, words):
    with pytest.raises(ProtocolError) as info:
        protocol.unpack(data)
    assert info.value.code == code and words in str(info.value), str(info.value)


def test_a_required_field_left_none_is_the_senders_error():
    with pytest.raises(ValueError, match="FINAL.compute_s must not be None"):
        protocol.pack(Final("s1", 3, 1, 9, None, 3), 0, SENDER)
    assert protocol.unpack(protocol.pack(Error("bad-frame", "garbage", None), 0, SENDER)).msg.session is None


def test_frame_size_limit():
    data = protocol.pack(Start("s", list(range(1000))), 0, SENDER)
    with pytest.raises(ProtocolError, match="exceeds the limit") as info:
        protocol.unpack(data, max_bytes=len(data) - 1)
    assert info.value.code == "too-large"
    assert protocol.unpack(data, max_bytes=len(data)).msg.input_ids == list(range(1000))


def test_random_bytes_only_ever_raise_protocol_errors():
    rng = np.random.default_rng(0)
    good = protocol.pack(MESSAGES[3], 1, SENDER)
    for i in range(3000):
        if i % 2:
            data = rng.integers(0, 256, rng.integers(0, 80), dtype=np.uint8).tobytes()
        else:  # flip bytes of a good frame
            data = bytearray(good)
            for j in rng.integers(0, len(data), 3):
                data[j] = int(rng.integers(0, 256))
            data = bytes(data)
        try:
            protocol.unpack(data)
        except ProtocolError:
            pass


def test_in_order_drops_duplicates_restores_order_and_gives_up_on_gaps():
    o = InOrder(wait_s=0.05)
    assert o.push(0, "a", 0.0) == ["a"]
    assert o.push(0, "a", 0.0) == [] and o.dropped == 1            # duplicate
    assert o.push(2, "c", 0.0) == []                               # ahead of a gap: held
    assert o.push(1, "b", 0.01) == ["b", "c"]                      # gap filled: both, in order
    assert o.push(4, "e", 0.02) == [] and o.expire(0.03) == []     # gap still young
    assert o.expire(0.08) == ["e"] and o.skipped == 1              # 3 given up as lost
    assert o.push(3, "d", 0.09) == [] and o.dropped == 2           # too late now: stale
    assert o.deadline() is None


def test_zmtp_splitter_finds_whole_messages():
    greeting = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x01" + b"NULL" + bytes(16) + b"\x00" + bytes(31)
    ready = bytes([0x04, 6]) + b"\x05READY"
    part1, part2 = bytes([0x01, 3]) + b"abc", bytes([0x02]) + (300).to_bytes(8, "big") + bytes(300)
    curve = bytes([0x04, 12]) + b"\x07MESSAGE" + b"xyzw"
    stream = greeting + ready + part1 + part2 + curve
    s = ZmtpSplitter()
    units = []
    for i in range(0, len(stream), 7):   # arbitrary TCP chunking
        units += s.feed(stream[i:i + 7])
    assert b"".join(u for u, _ in units) == stream
    droppable = [u for u, d in units if d]
    assert droppable == [part1 + part2, curve]
    assert [u for u, d in units if not d and len(u) > 20] == [] and ready in [u for u, _ in units]


def test_link_emulator_units():
    assert parse_duration("120ms") == pytest.approx(0.12) and parse_duration("0.5s") == 0.5
    assert parse_duration("250us") == pytest.approx(250e-6) and parse_duration("7") == pytest.approx(0.007)
    assert parse_rate("20mbit") == 20e6 and parse_rate(None) is None and parse_rate("500kbit") == 5e5
    assert parse_loss("1%") == pytest.approx(0.01) and parse_loss("0.05") == 0.05
    for bad in (lambda: parse_duration("fast"), lambda: parse_rate("20mbps"), lambda: parse_loss("1.5")):
        with pytest.raises(ValueError):
            bad()


def test_curve_is_required_off_loopback(tmp_path):
    assert security.is_loopback("tcp://127.0.0.1:5555") and security.is_loopback("tcp://[::1]:5555")
    assert security.is_loopback("tcp://localhost:1") and security.is_loopback("ipc:///tmp/x")
    assert not security.is_loopback("tcp://*:5555") and not security.is_loopback("tcp://10.0.0.2:5555")
    assert not security.is_loopback("tcp://cloud.example.com:5555")
    with pytest.raises(ValueError, match="CurveZMQ keys are required"):
        ZmqLink("tcp://10.0.0.2:5555", "tok")
    with pytest.raises(ValueError, match="CurveZMQ keys are required"):
        VerifierServer(None, ServerConfig(bind="tcp://0.0.0.0:5555"))
    with pytest.raises(ValueError, match="both"):
        ZmqLink("tcp://127.0.0.1:5555", "tok", LinkOptions(client_secret_key="x"))
    pub, sec = security.generate(tmp_path, "robot")
    with pytest.raises(security.KeyFileError, match="no secret key"):
        security.load_pair(pub)
    with pytest.raises(FileExistsError):
        security.generate(tmp_path, "robot")
    assert oct(sec.stat().st_mode & 0o777) == "0o600"
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(security.KeyFileError, match="not a ZeroMQ certificate"):
        security.load_public(tmp_path / "junk.key")
    with pytest.raises(security.KeyFileError, match="holds no"):
        security.secure_server(zmq.Context.instance(), None, sec, tmp_path / "empty")


def test_server_parameters_are_checked():
    assert ServerConfig.from_params({"bind": "tcp://127.0.0.1:1", "max_sessions": 3}).max_sessions == 3
    with pytest.raises(ValueError, match="unknown verifier parameters"):
        ServerConfig.from_params({"bnid": "x"})


def test_cloud_yaml_holds_exactly_the_verifier_parameters():
    from pathlib import Path
    from spec_edge_cloud.commands.verifier import MODEL_KEYS, read_params
    from spec_edge_cloud.fleet.config import FleetConfig
    params = read_params(Path(__file__).resolve().parents[1] / "config" / "cloud.yaml")
    fleet = {k: v for k, v in params.items() if k in FleetConfig.keys()}
    assert FleetConfig(**fleet) == FleetConfig(), "config/cloud.yaml's fleet keys differ from FleetConfig's defaults"
    assert set(fleet) == set(FleetConfig.keys())
    server = {k: v for k, v in params.items() if k not in MODEL_KEYS and k not in fleet}
    assert ServerConfig.from_params(server) == ServerConfig(**server)
    assert set(server) == set(ServerConfig.__dataclass_fields__), "config/cloud.yaml and ServerConfig differ"
