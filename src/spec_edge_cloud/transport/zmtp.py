"""Cut a ZMTP 3 byte stream into the units a network emulator may delay or drop.

The link emulator proxies TCP bytes; to lose *whole* ZeroMQ messages (never half a frame, which
would only corrupt the stream and kill the connection) it must see where messages begin and end:

- the 64-byte greeting passes through as it comes (libzmq sends it in pieces and waits for the
  peer's; holding it back would deadlock the handshake);
- then frames: a flags byte (bit 0 MORE, bit 1 LONG size, bit 2 COMMAND), a 1- or 8-byte size,
  the body. A message is its frames up to one without MORE;
- command frames (READY, HELLO, WELCOME, INITIATE, PING, ...) belong to the connection, not to
  the application: they are never dropped. Under CURVE every message travels inside a MESSAGE
  command (one per frame; this project's frames are single-part), which is droppable.
"""
from __future__ import annotations

GREETING_BYTES = 64
MORE, LONG, COMMAND = 0x01, 0x02, 0x04


class ZmtpSplitter:
    def __init__(self):
        self._buf = bytearray()
        self._greeting_left = GREETING_BYTES
        self._parts: list[bytes] = []   # frames of a message still missing its last frame

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Consume bytes; returns complete units as (bytes, droppable), in stream order."""
        out: list[tuple[bytes, bool]] = []
        if self._greeting_left:
            n = min(len(data), self._greeting_left)
            out.append((data[:n], False))
            self._greeting_left -= n
            data = data[n:]
        self._buf += data
        while len(self._buf) >= 2:
            flags = self._buf[0]
            head = 9 if flags & LONG else 2
            if len(self._buf) < head:
                break
            size = int.from_bytes(self._buf[1:9], "big") if flags & LONG else self._buf[1]
            if len(self._buf) < head + size:
                break
            frame = bytes(self._buf[:head + size])
            del self._buf[:head + size]
            if flags & COMMAND:
                name = frame[head + 1:head + 1 + frame[head]] if size else b""
                out.append((frame, name == b"MESSAGE"))
            else:
                self._parts.append(frame)
                if not flags & MORE:
                    out.append((b"".join(self._parts), True))
                    self._parts = []
        return out
