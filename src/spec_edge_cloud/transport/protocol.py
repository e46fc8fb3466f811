"""The wire protocol between robot and cloud: frames, and how each message goes on and off the wire.

A frame is one single-part ZeroMQ message holding one msgpack array:

    [version, kind, seq, sender, body]

- version: `VERSION`; a frame of any other version is answered ERROR `bad-version`.
- kind: the message's kind (`SCHEMA`: HELLO, WELCOME, PREFILL, DRAFT, GENERATE, CANCEL, END, PING,
  PONG, EARLY, FINAL, TOKEN, ERROR).
- seq: 0, 1, 2, ... per sender and connection: duplicates and stale frames are dropped, reordered
  ones put back in order (`ordering.InOrder`).
- sender: 8 random bytes naming the sending process instance: a restarted server has a new one, so
  its fresh sequence numbers are not mistaken for stale ones.
- body: the message's fields by name. The messages are msgspec Structs defined once, with their
  bounds (`decoding/messages.py`; HELLO and WELCOME, which only the transport sees, below): a body
  is decoded straight into its Struct, msgspec checking every type, range and length in C (a few
  microseconds a frame, against tens for the same checks in Python on the round's path).

What a type cannot say is checked after: printable session ids, a tensor's size and values, JPEG
headers. Tensors (the draft's distributions, for speculative sampling) travel as
`{dtype, shape, data}` with the raw float32 (default, exact) or float16 (half the bytes; the cloud
then sees rounded draft probabilities, so sampling is no longer exactly the target's distribution)
bytes. Images travel as JPEG: the PREFILL carries the prompt's own JPEG bytes (`Prompt.jpeg`, see
modeling/jpeg.py), so the cloud decodes the very pixels the robot drafted on; raw pixels handed to
the encoder are JPEG-encoded on the spot (the cloud then sees them after a lossy round trip the
draft did not make). A decoded PREFILL holds the JPEG bytes, their headers checked (`check_jpeg`:
size, pixels, scans); the receiver decodes the pixels (`decode_jpeg`) where and when it chooses.
Every decoder check raises `ProtocolError` (a ValueError) with the ERROR code to answer and a
message that says what is wrong (`KIND.field: what`); nothing in a frame can raise anything else.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import torch
from msgspec import Meta, Struct

from ..decoding.messages import (Cancel, DraftRequest, Early, End, Error, Final, Generate, Id, Layer, Layers, Ping,
                                 Pong, Start, Token)
from ..modeling import jpeg

VERSION = 1
MAX_FRAME_BYTES = 8 << 20        # default limit on one frame (a JPEG and a draft's distributions fit)
MAX_IMAGE_SIDE = 4096            # pixels; checked in the JPEG header before anything is decoded
MAX_IMAGE_PIXELS = 1 << 22       # width x height (2048 x 2048); a receiver may allow fewer
MAX_JPEG_SCANS = 32              # a progressive JPEG has ~10; each scan is a pass over every pixel
MAX_TENSOR_ELEMENTS = 1 << 24
SENDER_BYTES = 8


class ProtocolError(ValueError):
    """A frame that cannot be accepted; `code` is the ERROR code the receiver answers with."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code


# transport-level messages (the decoding core never sees them) ------------------------------------
Fingerprint = Annotated[str, Meta(max_length=64)]
Text = Annotated[str, Meta(max_length=128)]


class Hello(Struct):
    """First frame of every connection: the cloud serves only a robot whose tokenizer is its own."""
    tokenizer: Fingerprint
    draft_model: Fingerprint = ""
    expect_model: Fingerprint = ""  # the target fingerprint the robot insists on ("" = any)
    name: Text = ""
    # to a fleet's front: the replica whose connection this robot just lost; the front sends it to
    # another even before its own health poll has found that one down
    lost: Annotated[str, Meta(max_length=256)] = ""


class Welcome(Struct):
    tokenizer: Fingerprint
    model: Fingerprint
    layers: Layer
    exit_layers: Layers = []
    vocab: Id = 0
    max_frame_bytes: Annotated[int, Meta(ge=0, le=1 << 40)] = MAX_FRAME_BYTES
    emulated: Text = ""             # name of the timing profile the cloud pads to ("" = real timings)
    redirect: Annotated[str, Meta(max_length=256)] = ""  # a fleet's front: the replica to say HELLO to ("" = here)


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
    while m := re.fullmatch(r"(.*) - at `\$(.*)`", text, re.S):  # outermost path first (a tensor's inside)
        text, where = m.group(1), where + m.group(2)
    if m := re.fullmatch(r"Object missing required field `(.*)`", text, re.S):
        text, where = "missing", f"{where}.{m.group(1)}"
    if not where:  # the body itself is not a map
        return ProtocolError("bad-frame", f"{kind} body must be a map: {text}")
    return ProtocolError("bad-message", f"{kind}{where}: {text}")


def _session(v: str, where) -> None:
    if not v.isprintable() or "/" in v:
        raise where(f"expected a session id of 1..64 printable characters without '/', got {_show(v)}")


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


def _decode_tensor(raw: object) -> torch.Tensor:
    """A `torch.Tensor` field off the wire; a ValueError here is msgspec's error at that field."""
    try:
        v = msgspec.convert(raw, TensorWire)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    shape, np_dtype = v.shape, _DTYPES[v.dtype][0]
    if math.prod(shape) > MAX_TENSOR_ELEMENTS or len(v.data) != math.prod(shape) * np.dtype(np_dtype).itemsize:
        raise ValueError(f"tensor of shape {shape} ({v.dtype}) cannot hold {len(v.data)} bytes")
    array = np.frombuffer(v.data, dtype=np_dtype).reshape(shape).astype(np.float32)
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    return torch.from_numpy(array)


def _dec_hook(kind: type, raw: object) -> object:
    if kind is torch.Tensor:
        return _decode_tensor(raw)
    raise NotImplementedError(f"{kind} is not a wire type")


# images -------------------------------------------------------------------------------------------
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
    h, w = check_jpeg(data)
    try:
        pixels = jpeg.decode(data)
    except ValueError:
        pixels = None
    if pixels is None or pixels.shape[:2] != (h, w):
        raise ProtocolError("bad-message", "JPEG data could not be decoded")
    return pixels


def _check_image(v: bytes, where) -> None:
    """Images stay JPEG bytes when a frame is decoded (the headers checked): decoding the pixels is
    the receiver's choice of where and when."""
    try:
        check_jpeg(v)
    except ProtocolError as exc:
        raise where(str(exc)) from None


# the kinds, their messages, and what is checked after msgspec's own checks ---------------------------
SCHEMA: dict[str, type[Struct]] = {
    "HELLO": Hello, "WELCOME": Welcome, "PREFILL": Start, "DRAFT": DraftRequest, "GENERATE": Generate,
    "CANCEL": Cancel, "END": End, "PING": Ping, "PONG": Pong, "EARLY": Early, "FINAL": Final, "TOKEN": Token,
    "ERROR": Error,
}
KIND_OF = {cls: kind for kind, cls in SCHEMA.items()}
ROBOT_TO_CLOUD = frozenset({"HELLO", "PREFILL", "DRAFT", "GENERATE", "CANCEL", "END", "PING"})
_FINISH = {"session": _session, "image": _check_image}

# per kind, made once: its decoder, and the fields finished after it (their name, check, error maker)
_DECODE = {kind: (msgspec.msgpack.Decoder(cls, dec_hook=_dec_hook),
                  [(name, _FINISH[name], partial(_fail, kind, name)) for name in cls.__struct_fields__
                   if name in _FINISH])
           for kind, cls in SCHEMA.items()}
_REQUIRED = {kind: [f.name for f in msgspec.structs.fields(cls) if f.required] for kind, cls in SCHEMA.items()}
_FRAME = msgspec.msgpack.Decoder(tuple[Any, Any, Any, Any, msgspec.Raw])
_FRAMER = msgspec.msgpack.Encoder()


@lru_cache(maxsize=16)
def _encoder(options: WireOptions) -> msgspec.msgpack.Encoder:
    """Messages are encoded as they are (a Struct is a map of its fields); tensors and raw pixels as
    `options` say."""
    def enc_hook(value: object) -> object:
        if isinstance(value, torch.Tensor):
            return _encode_tensor(value, options)
        if isinstance(value, np.ndarray):
            return jpeg.encode(value, options.jpeg_quality)
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
    decoder, finish = _DECODE[kind]
    try:
        msg = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _invalid(kind, exc) from None
    except Exception as exc:  # inside the body: msgspec.DecodeError, UnicodeDecodeError for a bad string
        raise ProtocolError("bad-frame", f"{kind} body is not msgpack ({type(exc).__name__}: {exc})") from None
    for name, check, where in finish:
        if (value := getattr(msg, name)) is not None:
            check(value, where)
    return Envelope(kind, seq, sender, msg)
