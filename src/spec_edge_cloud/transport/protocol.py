"""The wire protocol between robot and cloud: the whole schema, in this one module.

A frame is one single-part ZeroMQ message holding one msgpack array:

    [version, kind, seq, sender, body]

| slot    | type  | meaning                                                                          |
| ------- | ----- | -------------------------------------------------------------------------------- |
| version | int   | `VERSION`; a frame of any other version is answered ERROR `bad-version`           |
| kind    | str   | one of the kinds below                                                            |
| seq     | int   | 0, 1, 2, ... per sender and connection: duplicates and stale frames are dropped,  |
|         |       | reordered ones put back in order (`ordering.InOrder`)                             |
| sender  | bytes | 8 random bytes naming the sending process instance: a restarted server has a new  |
|         |       | one, so its fresh sequence numbers are not mistaken for stale ones                |
| body    | map   | the fields of that kind, by name (unknown names are ignored)                      |

| kind     | direction     | message                     | fields                                                       |
| -------- | ------------- | --------------------------- | ------------------------------------------------------------ |
| HELLO    | robot -> cloud | `Hello`                    | tokenizer, draft_model, expect_model, name                   |
| WELCOME  | cloud -> robot | `Welcome`                  | tokenizer, model, layers, exit_layers, vocab, max_frame_bytes, emulated |
| PREFILL  | robot -> cloud | `messages.Start`           | session, input_ids, image (JPEG), temperature, seed          |
| DRAFT    | robot -> cloud | `messages.DraftRequest`    | session, round, base, tokens, probs (tensor), assumes, exit_layers, exit_threshold |
| GENERATE | robot -> cloud | `messages.Generate`        | session, round, base, max_new_tokens, stop_ids               |
| CANCEL   | robot -> cloud | `messages.Cancel`          | session                                                      |
| END      | robot -> cloud | `messages.End`             | session                                                      |
| PING     | robot -> cloud | `messages.Ping` (heartbeat)| sent                                                         |
| PONG     | cloud -> robot | `messages.Pong`            | sent                                                         |
| EARLY    | cloud -> robot | `messages.Early`           | session, round, layer, accepted, next_token, confidence      |
| FINAL    | cloud -> robot | `messages.Final`           | session, round, accepted, next_token, compute_s, tokens_in_pass, exits, rows |
| TOKEN    | cloud -> robot | `messages.Token`           | session, round, index, token, compute_s                      |
| ERROR    | cloud -> robot | `messages.Error`           | code, text, session                                          |

Tensors (the draft's distributions, for speculative sampling) travel as `{dtype, shape, data}` with the
raw float32 (default, exact) or float16 (half the bytes; the cloud then sees rounded draft
probabilities, so sampling is no longer exactly the target's distribution) bytes. Images travel as
JPEG (opencv). JPEG is lossy: for the draft and the target to see the same pixels, the robot runs
its draft on `jpeg_roundtrip(image)`; the encoder remembers the JPEG bytes of every image it decoded
that way and sends exactly those bytes, so the cloud decodes the very pixels the robot drafted on
(same opencv/libjpeg build on both sides).

Every decoder check raises `ProtocolError` (a ValueError) with the ERROR code to answer and a
message that says what is wrong; nothing in a frame can raise anything else.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Callable

import msgpack
import numpy as np
import torch

from ..decoding.messages import (Cancel, DraftRequest, Early, End, Error, Final, Generate, Ping, Pong, Start,
                                 Token)

VERSION = 1
MAX_FRAME_BYTES = 8 << 20        # default limit on one frame (a JPEG and a draft's distributions fit)
MAX_IMAGE_SIDE = 4096            # pixels; checked in the JPEG header before anything is decoded
MAX_LIST = 1 << 16               # longest list of ids in any field
MAX_TENSOR_ELEMENTS = 1 << 24
SENDER_BYTES = 8


class ProtocolError(ValueError):
    """A frame that cannot be accepted; `code` is the ERROR code the receiver answers with."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code


# transport-level messages (the decoding core never sees them) ------------------------------------
@dataclass
class Hello:
    """First frame of every connection: the cloud serves only a robot whose tokenizer is its own."""
    tokenizer: str
    draft_model: str = ""
    expect_model: str = ""      # the target fingerprint the robot insists on ("" = any)
    name: str = ""


@dataclass
class Welcome:
    tokenizer: str
    model: str
    layers: int
    exit_layers: list[int] = field(default_factory=list)
    vocab: int = 0
    max_frame_bytes: int = MAX_FRAME_BYTES
    emulated: str = ""          # name of the timing profile the cloud pads to ("" = real timings)


@dataclass
class WireOptions:
    """How the sender encodes what has several encodings."""
    jpeg_quality: int = 90
    probs_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.probs_dtype not in _DTYPES:
            raise ValueError(f"probs_dtype must be one of {sorted(_DTYPES)}, got {self.probs_dtype!r}")


@dataclass
class Envelope:
    kind: str
    seq: int
    sender: bytes
    msg: Any


# field codecs: decode validates a raw msgpack value; encode turns a Python value into one ----------
def _fail(kind: str, name: str, what: str) -> ProtocolError:
    return ProtocolError("bad-message", f"{kind}.{name}: {what}")


def _integer(lo: int = 0, hi: int = 2**53):
    def check(v, where):
        if type(v) is not int or not lo <= v <= hi:
            raise where(f"expected an integer in {lo}..{hi}, got {_show(v)}")
        return v
    return check


def _real(lo: float = -1e30, hi: float = 1e30):
    def check(v, where):
        if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
            raise where(f"expected a finite number in {lo:g}..{hi:g}, got {_show(v)}")
        return float(v)
    return check


def _text(max_len: int):
    def check(v, where):
        if type(v) is not str or len(v) > max_len:
            raise where(f"expected a string of at most {max_len} characters, got {_show(v)}")
        return v
    return check


def _session(v, where):
    if type(v) is not str or not 1 <= len(v) <= 64 or not v.isprintable() or "/" in v:
        raise where(f"expected a session id of 1..64 printable characters without '/', got {_show(v)}")
    return v


def _ints(max_len: int = MAX_LIST, hi: int = 2**31 - 1):
    item = _integer(0, hi)

    def check(v, where):
        if type(v) is not list or len(v) > max_len:
            raise where(f"expected a list of at most {max_len} integers, got {_show(v)}")
        for x in v:  # inline: a call per token would cost more than the rest of the frame
            if type(x) is not int or not 0 <= x <= hi:
                item(x, where)
        return v
    return check


_ANY_INT = _integer()


def _triple(v, where):
    if type(v) is not list or len(v) != 3:
        raise where(f"expected [round, accepted, next_token], got {_show(v)}")
    return tuple(_ANY_INT(x, where) for x in v)


def _triples(v, where):
    if type(v) is not list or len(v) > 256:
        raise where(f"expected a list of [layer, accepted, next_token], got {_show(v)}")
    return [_triple(x, where) for x in v]


def _bytes(v, where):
    if type(v) is not bytes:
        raise where(f"expected bytes, got {_show(v)}")
    return v


def _show(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


# tensors ------------------------------------------------------------------------------------------
_DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16)}


def _encode_tensor(t: torch.Tensor, opt: WireOptions) -> dict:
    np_dtype, torch_dtype = _DTYPES[opt.probs_dtype]
    data = t.detach().to("cpu", torch_dtype).contiguous().numpy().astype(np_dtype, copy=False).tobytes()
    return {"dtype": opt.probs_dtype, "shape": list(t.shape), "data": data}


def _decode_tensor(v, where) -> torch.Tensor:
    if type(v) is not dict or set(v) != {"dtype", "shape", "data"}:
        raise where(f"expected a tensor {{dtype, shape, data}}, got {_show(v)}")
    if v["dtype"] not in _DTYPES:
        raise where(f"tensor dtype must be one of {sorted(_DTYPES)}, got {_show(v['dtype'])}")
    shape = v["shape"]
    if type(shape) is not list or not 1 <= len(shape) <= 2:
        raise where(f"tensor shape must be a list of 1 or 2 sizes, got {_show(shape)}")
    shape = [_integer(0, MAX_TENSOR_ELEMENTS)(s, where) for s in shape]
    np_dtype = _DTYPES[v["dtype"]][0]
    data = _bytes(v["data"], where)
    if math.prod(shape) > MAX_TENSOR_ELEMENTS or len(data) != math.prod(shape) * np.dtype(np_dtype).itemsize:
        raise where(f"tensor of shape {shape} ({v['dtype']}) cannot hold {len(data)} bytes")
    array = np.frombuffer(data, dtype=np_dtype).reshape(shape).astype(np.float32)
    if not np.isfinite(array).all() or (array < 0).any():
        raise where("probabilities must be finite and non-negative")
    return torch.from_numpy(array)


# images -------------------------------------------------------------------------------------------
class _JpegMemory:
    """The JPEG bytes of images the robot decoded from its own JPEG, by pixel digest (small LRU)."""

    def __init__(self, size: int = 8):
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16,
                               person=str(image.shape).encode()[:16]).digest()

    def put(self, image: np.ndarray, jpeg: bytes) -> None:
        with self._lock:
            self._items[self.key(image)] = jpeg
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, image: np.ndarray) -> bytes | None:
        with self._lock:
            return self._items.get(self.key(image))


_JPEG_MEMORY = _JpegMemory()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    import cv2
    from ..modeling.bundle import check_image
    known = _JPEG_MEMORY.get(check_image(image))
    if known is not None:
        return known
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("opencv could not encode the image as JPEG")
    return buf.tobytes()


def jpeg_roundtrip(image: np.ndarray, quality: int = 90) -> np.ndarray:
    """The pixels the cloud will see: encode to JPEG, decode, and remember the bytes for the link."""
    jpeg = encode_jpeg(image, quality)
    pixels = decode_jpeg(jpeg)
    _JPEG_MEMORY.put(pixels, jpeg)
    return pixels


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header, read before decoding (no decompression bombs)."""
    if data[:2] != b"\xff\xd8":
        raise ProtocolError("bad-message", "image is not a JPEG (no SOI marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= len(data):
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ProtocolError("bad-message", "JPEG without a readable frame header")


def decode_jpeg(data: bytes) -> np.ndarray:
    import cv2
    h, w = jpeg_size(data)
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise ProtocolError("bad-message", f"image of {w}x{h} pixels: each side must be 1..{MAX_IMAGE_SIDE}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (h, w):
        raise ProtocolError("bad-message", "JPEG data could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_image(v, where) -> np.ndarray:
    try:
        return decode_jpeg(_bytes(v, where))
    except ProtocolError as exc:
        raise where(str(exc)) from None


# the schema ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class F:
    """One field: how to validate it on the way in, how to encode it on the way out."""
    name: str
    decode: Callable[[Any, Callable[[str], ProtocolError]], Any]
    encode: Callable[[Any, WireOptions], Any] | None = None   # None: the value goes as it is
    optional: bool = False


_ID = _integer(0, 2**31 - 1)
_ROUND = _integer()
_SECONDS = _real(0.0, 1e9)
_FP = _text(64)

SCHEMA: dict[str, tuple[type, list[F]]] = {
    "HELLO": (Hello, [F("tokenizer", _FP), F("draft_model", _FP), F("expect_model", _FP), F("name", _text(128))]),
    "WELCOME": (Welcome, [F("tokenizer", _FP), F("model", _FP), F("layers", _integer(0, 4096)),
                          F("exit_layers", _ints(256, 4096)), F("vocab", _ID),
                          F("max_frame_bytes", _integer(0, 1 << 40)), F("emulated", _text(128))]),
    "PREFILL": (Start, [F("session", _session), F("input_ids", _ints()),
                        F("image", _decode_image, lambda v, opt: encode_jpeg(v, opt.jpeg_quality), optional=True),
                        F("temperature", _real(0.0, 1e3)), F("seed", _integer(0, 2**63 - 1))]),
    "DRAFT": (DraftRequest, [F("session", _session), F("round", _ROUND), F("base", _ROUND), F("tokens", _ints()),
                             F("probs", _decode_tensor, _encode_tensor, optional=True),
                             F("assumes", _triple, lambda v, opt: list(v), optional=True),
                             F("exit_layers", _ints(256, 4096), optional=True),
                             F("exit_threshold", _real(-1e3, 1e3))]),
    "GENERATE": (Generate, [F("session", _session), F("round", _ROUND), F("base", _ROUND),
                            F("max_new_tokens", _integer(0, 1 << 20)), F("stop_ids", _ints(1024))]),
    "CANCEL": (Cancel, [F("session", _session)]),
    "END": (End, [F("session", _session)]),
    "PING": (Ping, [F("sent", _real())]),
    "PONG": (Pong, [F("sent", _real())]),
    "EARLY": (Early, [F("session", _session), F("round", _ROUND), F("layer", _integer(0, 4096)),
                      F("accepted", _ROUND), F("next_token", _ID), F("confidence", _real(0.0, 1.0))]),
    "FINAL": (Final, [F("session", _session), F("round", _ROUND), F("accepted", _ROUND), F("next_token", _ID),
                      F("compute_s", _SECONDS), F("tokens_in_pass", _ROUND),
                      F("exits", _triples, lambda v, opt: [list(t) for t in v]),
                      F("rows", _integer(1, 4096), optional=True)]),
    "TOKEN": (Token, [F("session", _session), F("round", _ROUND), F("index", _ROUND), F("token", _ID),
                      F("compute_s", _SECONDS)]),
    "ERROR": (Error, [F("code", _text(64)), F("text", _text(4096)), F("session", _session, optional=True)]),
}
KIND_OF = {cls: kind for kind, (cls, _) in SCHEMA.items()}


def _header(kind: str) -> bytes:
    """A frame's array marker, version and kind: all that comes before `seq`."""
    return b"\x95" + msgpack.packb(VERSION) + msgpack.packb(kind)


# per kind, made once: the frame header, and each field's error maker for its checks
_HEADER = {kind: _header(kind) for kind in SCHEMA}
_WHERE = {kind: [partial(_fail, kind, f.name) for f in spec] for kind, (_, spec) in SCHEMA.items()}
ROBOT_TO_CLOUD = frozenset({"HELLO", "PREFILL", "DRAFT", "GENERATE", "CANCEL", "END", "PING"})

for _kind, (_cls, _fields) in SCHEMA.items():  # the schema names every field of its class, and no other
    assert [f.name for f in _fields] == [f.name for f in fields(_cls)], _kind


# frames -------------------------------------------------------------------------------------------
def pack_body(msg: object, options: WireOptions = WireOptions()) -> tuple[str, bytes]:
    """(kind, packed body) of a message: the costly half of a frame, done by whoever sends it."""
    kind = KIND_OF.get(type(msg))
    if kind is None:
        raise TypeError(f"{type(msg).__name__} is not a protocol message")
    body = {}
    for f in SCHEMA[kind][1]:
        value = getattr(msg, f.name)
        if value is None:
            if not f.optional:
                raise ValueError(f"{kind}.{f.name} must not be None")
            continue
        body[f.name] = value if f.encode is None else f.encode(value, options)
    return kind, msgpack.packb(body, use_bin_type=True)


def frame(kind: str, body: bytes, seq: int, sender: bytes) -> bytes:
    """Wrap a packed body: the header is packed alone and prepended (an array is its items in a row)."""
    head = _HEADER.get(kind) or _header(kind)  # (tests forge frames of other kinds)
    return head + msgpack.packb(seq) + msgpack.packb(sender, use_bin_type=True) + body


def pack(msg: object, seq: int, sender: bytes, options: WireOptions = WireOptions()) -> bytes:
    kind, body = pack_body(msg, options)
    return frame(kind, body, seq, sender)


def unpack(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Envelope:
    """Decode and validate one frame; anything wrong raises ProtocolError with the code to answer."""
    if len(data) > max_bytes:
        raise ProtocolError("too-large", f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several types for garbage; all mean the same here
        raise ProtocolError("bad-frame", f"not a msgpack frame ({type(exc).__name__}: {exc})") from None
    if type(items) is not list or len(items) != 5:
        raise ProtocolError("bad-frame", f"a frame is [version, kind, seq, sender, body], got {_show(items)}")
    version, kind, seq, sender, body = items
    if version != VERSION:
        raise ProtocolError("bad-version", f"protocol version {_show(version)}; this side speaks {VERSION}")
    if kind not in SCHEMA:
        raise ProtocolError("bad-frame", f"unknown kind {_show(kind)}")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise ProtocolError("bad-frame", f"seq must be a non-negative integer, got {_show(seq)}")
    if type(sender) is not bytes or len(sender) != SENDER_BYTES:
        raise ProtocolError("bad-frame", f"sender must be {SENDER_BYTES} bytes, got {_show(sender)}")
    if type(body) is not dict:
        raise ProtocolError("bad-frame", f"{kind} body must be a map, got {_show(body)}")
    cls, spec = SCHEMA[kind]
    values = []  # in the class's field order (checked at import)
    for f, where in zip(spec, _WHERE[kind]):
        value = body.get(f.name)
        if value is not None:
            value = f.decode(value, where)
        elif not f.optional:
            raise where("missing")
        values.append(value)
    return Envelope(kind, seq, sender, cls(*values))
