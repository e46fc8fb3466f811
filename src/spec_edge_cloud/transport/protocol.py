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
| WELCOME  | cloud -> robot | `Welcome`                  | tokenizer, model, layers, exit_layers, vocab, max_frame_bytes, emulated, redirect |
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
(same opencv/libjpeg build on both sides). A decoded PREFILL holds the JPEG bytes, their headers
checked (`check_jpeg`: size, pixels, scans); the receiver decodes the pixels (`decode_jpeg`) where
and when it chooses.

Each kind's body has a wire type below (a msgspec Struct): msgspec checks every type, range and
length in C while it decodes (a few microseconds a frame, against tens for the same checks in
Python on the round's path); what a type cannot say (printable session ids, tensor sizes, JPEG
headers) is checked after. Every decoder check raises `ProtocolError` (a ValueError) with the
ERROR code to answer and a message that says what is wrong (`KIND.field: what`); nothing in a
frame can raise anything else.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import lru_cache, partial
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import torch
from msgspec import Meta, Struct

from ..decoding.messages import (Cancel, DraftRequest, Early, End, Error, Final, Generate, Ping, Pong, Start,
                                 Token)

VERSION = 1
MAX_FRAME_BYTES = 8 << 20        # default limit on one frame (a JPEG and a draft's distributions fit)
MAX_IMAGE_SIDE = 4096            # pixels; checked in the JPEG header before anything is decoded
MAX_IMAGE_PIXELS = 1 << 22       # width x height (2048 x 2048); a receiver may allow fewer
MAX_JPEG_SCANS = 32              # a progressive JPEG has ~10; each scan is a pass over every pixel
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
    redirect: str = ""          # a fleet's front: the replica endpoint to say HELLO to instead ("" = served here)


@dataclass(frozen=True)
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


# errors -------------------------------------------------------------------------------------------
def _fail(kind: str, name: str, what: str) -> ProtocolError:
    return ProtocolError("bad-message", f"{kind}.{name}: {what}")


def _show(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _invalid(kind: str, exc: msgspec.ValidationError) -> ProtocolError:
    """msgspec's "Expected `int` >= 0 - at `$.round`" as "DRAFT.round: Expected `int` >= 0"."""
    text, where = str(exc), ""
    if m := re.fullmatch(r"(.*) - at `\$(.*)`", text, re.S):
        text, where = m.groups()
    if m := re.fullmatch(r"Object missing required field `(.*)`", text, re.S):
        text, where = "missing", f"{where}.{m.group(1)}"
    if not where:  # the body itself is not a map
        return ProtocolError("bad-frame", f"{kind} body must be a map: {text}")
    return ProtocolError("bad-message", f"{kind}{where}: {text}")


def _session(v: str, where) -> str:
    if not v.isprintable() or "/" in v:
        raise where(f"expected a session id of 1..64 printable characters without '/', got {_show(v)}")
    return v


# tensors ------------------------------------------------------------------------------------------
_DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16)}


def _encode_tensor(t: torch.Tensor, opt: WireOptions) -> dict:
    np_dtype, torch_dtype = _DTYPES[opt.probs_dtype]
    data = t.detach().to("cpu", torch_dtype).contiguous().numpy().astype(np_dtype, copy=False).tobytes()
    return {"dtype": opt.probs_dtype, "shape": list(t.shape), "data": data}


class TensorWire(Struct, kw_only=True):
    dtype: Literal["float32", "float16"]
    shape: Annotated[list[Annotated[int, Meta(ge=0, le=MAX_TENSOR_ELEMENTS)]], Meta(min_length=1, max_length=2)]
    data: bytes


def _decode_tensor(v: TensorWire, where) -> torch.Tensor:
    shape, np_dtype = v.shape, _DTYPES[v.dtype][0]
    if math.prod(shape) > MAX_TENSOR_ELEMENTS or len(v.data) != math.prod(shape) * np.dtype(np_dtype).itemsize:
        raise where(f"tensor of shape {shape} ({v.dtype}) cannot hold {len(v.data)} bytes")
    array = np.frombuffer(v.data, dtype=np_dtype).reshape(shape).astype(np.float32)
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


_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the next marker after entropy-coded data


def check_jpeg(data: bytes) -> tuple[int, int]:
    """(height, width) of a JPEG, read from its headers before anything is decoded; ProtocolError if
    decoding it could cost more than a camera frame does: a side beyond MAX_IMAGE_SIDE, more than
    MAX_IMAGE_PIXELS pixels, or more than MAX_JPEG_SCANS scans (a progressive image whose scans
    repeat makes a small file that takes a decoder minutes)."""
    if data[:2] != b"\xff\xd8":
        raise ProtocolError("bad-message", "image is not a JPEG (no SOI marker)")
    size, scans, i, n = None, 0, 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and size is None and i + 9 <= n:
            size = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ProtocolError("bad-message", f"JPEG with more than {MAX_JPEG_SCANS} scans")
            m = _MARKER.search(data, end)
            end = m.start() if m else n
        i = end
    if size is None:
        raise ProtocolError("bad-message", "JPEG without a readable frame header")
    h, w = size
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE) or h * w > MAX_IMAGE_PIXELS:
        raise ProtocolError("bad-message", f"image of {w}x{h} pixels: each side must be 1..{MAX_IMAGE_SIDE}, "
                                           f"at most {MAX_IMAGE_PIXELS} pixels in all")
    return h, w


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB pixels of a JPEG that passes `check_jpeg`. The cloud runs this off its serving thread."""
    import cv2
    h, w = check_jpeg(data)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (h, w):
        raise ProtocolError("bad-message", "JPEG data could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_image(v: bytes, where) -> bytes:
    """Images stay JPEG bytes when a frame is decoded (the headers checked): decoding the pixels is
    the receiver's choice of where and when."""
    try:
        check_jpeg(v)
    except ProtocolError as exc:
        raise where(str(exc)) from None
    return v


# the schema: one wire type per kind, its fields named and ordered as the message's -------------------
Id = Annotated[int, Meta(ge=0, le=2**31 - 1)]                # a token id
Count = Annotated[int, Meta(ge=0, le=2**53)]                 # rounds, positions, numbers of tokens
Layer = Annotated[int, Meta(ge=0, le=4096)]
Seconds = Annotated[float, Meta(ge=0.0, le=1e9)]
Real = Annotated[float, Meta(ge=-1e30, le=1e30)]             # any finite number
Fingerprint = Annotated[str, Meta(max_length=64)]
Text = Annotated[str, Meta(max_length=128)]
Session = Annotated[str, Meta(min_length=1, max_length=64)]  # and printable, without '/' (`_session`)
Ids = Annotated[list[Id], Meta(max_length=MAX_LIST)]
Layers = Annotated[list[Layer], Meta(max_length=256)]
Triple = tuple[Count, Count, Count]                          # (round or layer, accepted, next_token)


class HelloWire(Struct, kw_only=True):
    tokenizer: Fingerprint
    draft_model: Fingerprint
    expect_model: Fingerprint
    name: Text


class WelcomeWire(Struct, kw_only=True):
    tokenizer: Fingerprint
    model: Fingerprint
    layers: Layer
    exit_layers: Layers
    vocab: Id
    max_frame_bytes: Annotated[int, Meta(ge=0, le=1 << 40)]
    emulated: Text
    redirect: Annotated[str, Meta(max_length=256)] = ""


class PrefillWire(Struct, kw_only=True):
    session: Session
    input_ids: Ids
    image: bytes | None = None                               # JPEG (`_check_image`)
    temperature: Annotated[float, Meta(ge=0.0, le=1e3)]
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)]


class DraftWire(Struct, kw_only=True):
    session: Session
    round: Count
    base: Count
    tokens: Ids
    probs: TensorWire | None = None                          # (`_decode_tensor`)
    assumes: Triple | None = None
    exit_layers: Layers | None = None
    exit_threshold: Annotated[float, Meta(ge=-1e3, le=1e3)]
    support: Annotated[list[Ids], Meta(max_length=64)] | None = None  # the ids of a truncated `probs`


class GenerateWire(Struct, kw_only=True):
    session: Session
    round: Count
    base: Count
    max_new_tokens: Annotated[int, Meta(ge=0, le=1 << 20)]
    stop_ids: Annotated[list[Id], Meta(max_length=1024)]


class SessionWire(Struct, kw_only=True):                    # CANCEL, END
    session: Session


class TimeWire(Struct, kw_only=True):                       # PING, PONG
    sent: Real


class EarlyWire(Struct, kw_only=True):
    session: Session
    round: Count
    layer: Layer
    accepted: Count
    next_token: Id
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)]


class FinalWire(Struct, kw_only=True):
    session: Session
    round: Count
    accepted: Count
    next_token: Id
    compute_s: Seconds
    tokens_in_pass: Count
    exits: Annotated[list[Triple], Meta(max_length=256)]
    rows: Annotated[int, Meta(ge=1, le=4096)] | None = None


class TokenWire(Struct, kw_only=True):
    session: Session
    round: Count
    index: Count
    token: Id
    compute_s: Seconds


class ErrorWire(Struct, kw_only=True):
    code: Annotated[str, Meta(max_length=64)]
    text: Annotated[str, Meta(max_length=4096)]
    session: Session | None = None


SCHEMA: dict[str, tuple[type, type[Struct]]] = {
    "HELLO": (Hello, HelloWire), "WELCOME": (Welcome, WelcomeWire), "PREFILL": (Start, PrefillWire),
    "DRAFT": (DraftRequest, DraftWire), "GENERATE": (Generate, GenerateWire), "CANCEL": (Cancel, SessionWire),
    "END": (End, SessionWire), "PING": (Ping, TimeWire), "PONG": (Pong, TimeWire), "EARLY": (Early, EarlyWire),
    "FINAL": (Final, FinalWire), "TOKEN": (Token, TokenWire), "ERROR": (Error, ErrorWire),
}
KIND_OF = {cls: kind for kind, (cls, _) in SCHEMA.items()}
ROBOT_TO_CLOUD = frozenset({"HELLO", "PREFILL", "DRAFT", "GENERATE", "CANCEL", "END", "PING"})
_FINISH = {"session": _session, "image": _check_image, "probs": _decode_tensor}  # checks after msgspec's

for _kind, (_cls, _wire) in SCHEMA.items():  # the wire type names every field of its class, in order, and no other
    assert _wire.__struct_fields__ == tuple(f.name for f in fields(_cls)), _kind

# per kind, made once: its decoder, and the fields finished after it (their index, check, error maker)
_DECODE = {kind: (cls, msgspec.msgpack.Decoder(wire),
                  [(i, _FINISH[name], partial(_fail, kind, name)) for i, name in enumerate(wire.__struct_fields__)
                   if name in _FINISH])
           for kind, (cls, wire) in SCHEMA.items()}
_REQUIRED = {kind: [f.name for f in msgspec.structs.fields(wire) if f.required] for kind, (_, wire) in SCHEMA.items()}
_FRAME = msgspec.msgpack.Decoder(tuple[Any, Any, Any, Any, msgspec.Raw])
_FRAMER = msgspec.msgpack.Encoder()


@lru_cache(maxsize=16)
def _encoder(options: WireOptions) -> msgspec.msgpack.Encoder:
    """Messages are encoded as they are (a dataclass is a map of its fields); tensors and images as
    `options` say."""
    def enc_hook(value: object) -> object:
        if isinstance(value, torch.Tensor):
            return _encode_tensor(value, options)
        if isinstance(value, np.ndarray):
            return encode_jpeg(value, options.jpeg_quality)
        raise TypeError(f"{type(value).__name__} cannot go on the wire")
    return msgspec.msgpack.Encoder(enc_hook=enc_hook)


# frames -------------------------------------------------------------------------------------------
def pack_body(msg: object, options: WireOptions = WireOptions()) -> tuple[str, bytes]:
    """(kind, packed body) of a message: the costly half of a frame, done by whoever sends it."""
    kind = KIND_OF.get(type(msg))
    if kind is None:
        raise TypeError(f"{type(msg).__name__} is not a protocol message")
    for name in _REQUIRED[kind]:  # the sender's bug, caught here rather than as the receiver's ERROR
        if getattr(msg, name) is None:
            raise ValueError(f"{kind}.{name} must not be None")
    return kind, _encoder(options).encode(msg)


def frame(kind: str, body: bytes, seq: int, sender: bytes) -> bytes:
    """Wrap a packed body (kept apart so a retry or a repeated FINAL re-sends the same bytes)."""
    return _FRAMER.encode((VERSION, kind, seq, sender, msgspec.Raw(body)))


def pack(msg: object, seq: int, sender: bytes, options: WireOptions = WireOptions()) -> bytes:
    kind, body = pack_body(msg, options)
    return frame(kind, body, seq, sender)


def unpack(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Envelope:
    """Decode and validate one frame; anything wrong raises ProtocolError with the code to answer."""
    if len(data) > max_bytes:
        raise ProtocolError("too-large", f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        version, kind, seq, sender, body = _FRAME.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError("bad-frame", f"a frame is one msgpack array [version, kind, seq, sender, body]: "
                                         f"{exc}") from None
    except Exception as exc:  # msgspec.DecodeError for garbage, RecursionError for absurd nesting
        raise ProtocolError("bad-frame", f"not a msgpack frame ({type(exc).__name__}: {exc})") from None
    if version != VERSION:
        raise ProtocolError("bad-version", f"protocol version {_show(version)}; this side speaks {VERSION}")
    if type(kind) is not str or kind not in SCHEMA:
        raise ProtocolError("bad-frame", f"unknown kind {_show(kind)}")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise ProtocolError("bad-frame", f"seq must be a non-negative integer, got {_show(seq)}")
    if type(sender) is not bytes or len(sender) != SENDER_BYTES:
        raise ProtocolError("bad-frame", f"sender must be {SENDER_BYTES} bytes, got {_show(sender)}")
    cls, decoder, finish = _DECODE[kind]
    try:
        values = msgspec.structs.astuple(decoder.decode(body))
    except msgspec.ValidationError as exc:
        raise _invalid(kind, exc) from None
    except Exception as exc:  # inside the body: msgspec.DecodeError, UnicodeDecodeError for a bad string
        raise ProtocolError("bad-frame", f"{kind} body is not msgpack ({type(exc).__name__}: {exc})") from None
    if finish:
        values = list(values)
        for i, check, where in finish:
            if values[i] is not None:
                values[i] = check(values[i], where)
    return Envelope(kind, seq, sender, cls(*values))
