"""A user-space network emulator on loopback: a TCP proxy that delays, throttles and drops.

The kernel here has no netem, so tests and benchmarks put this proxy between robot and cloud:

    robot DEALER --> emulator (listen) --> verifier ROUTER (forward)

Semantics, per direction (robot->cloud and cloud->robot are independent):
- delay: each unit takes rtt/2 plus a jitter drawn uniformly in [-jitter/2, +jitter/2] (so a round
  trip varies within rtt +- jitter), never less than zero; units never overtake each other, as on a
  TCP stream (a late one holds back those behind it);
- bandwidth: units leave one after another at the given bit rate (store and forward), shared by all
  connections through the emulator, as on one radio link;
- loss: each whole ZeroMQ message is dropped with the given probability, independently. TCP itself
  never loses bytes; whole-message loss stands for what a robot really sees on a bad link (a
  connection that stalls and is torn down with messages in it), and the protocol must survive it by
  deadlines and retries. Handshake and other ZMTP commands are never dropped (see `zmtp`).
Units are the ZMTP greeting pieces, then whole messages (`zmtp.ZmtpSplitter`).
Faults on demand (the soak benchmark): `impair` changes delay, jitter and loss on the open
connections too; `cut` drops every connection at once, as a lost radio link, and can refuse new ones
for a while (the link down).
"""
from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .security import is_loopback
from .zmtp import ZmtpSplitter

log = logging.getLogger(__name__)


def parse_duration(text: str | float) -> float:
    """'120ms', '0.12s', '500us' -> seconds (a bare number means milliseconds)."""
    if isinstance(text, (int, float)):
        return float(text) / 1000
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", text)
    if not m:
        raise ValueError(f"cannot read a duration from {text!r} (examples: 120ms, 0.5s)")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}[m.group(2)]


def parse_rate(text: str | None) -> float | None:
    """'20mbit', '500kbit', '1gbit', '9600bit' -> bits per second (None or '0' = unlimited)."""
    if text in (None, "", "0"):
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit)\s*", text.lower())
    if not m:
        raise ValueError(f"cannot read a bit rate from {text!r} (examples: 20mbit, 500kbit)")
    return float(m.group(1)) * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[m.group(2)]


def parse_loss(text: str | float) -> float:
    """'0.01' or '1%' -> 0.01."""
    value = float(text.rstrip("%")) / 100 if isinstance(text, str) and text.endswith("%") else float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"loss must be a probability in [0, 1), got {text!r}")
    return value


def tcp_address(endpoint: str) -> tuple[str, int]:
    m = re.fullmatch(r"tcp://(\[[^\]]+\]|[^:]+):(\d+)", endpoint)
    if not m:
        raise ValueError(f"expected tcp://HOST:PORT, got {endpoint!r}")
    return m.group(1).strip("[]"), int(m.group(2))


@dataclass
class LinkSpec:
    rtt_s: float = 0.0
    jitter_s: float = 0.0
    bandwidth_bps: float | None = None
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or self.jitter_s < 0:
            raise ValueError("rtt and jitter must be >= 0")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ValueError("bandwidth must be positive")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss}")

    def describe(self) -> str:
        bw = f"{self.bandwidth_bps / 1e6:g} Mbit/s" if self.bandwidth_bps else "unlimited"
        return (f"rtt {self.rtt_s * 1000:g} ms, jitter {self.jitter_s * 1000:g} ms, bandwidth {bw}, "
                f"loss {self.loss:.1%} of messages")


@dataclass
class EmulatorStats:
    connections: int = 0
    messages: dict = field(default_factory=lambda: {"up": 0, "down": 0})
    dropped: dict = field(default_factory=lambda: {"up": 0, "down": 0})
    bytes: dict = field(default_factory=lambda: {"up": 0, "down": 0})


class _Radio:
    """One direction's shared transmitter: units leave back to back at the bit rate."""

    def __init__(self, bandwidth_bps: float | None):
        self.bandwidth_bps = bandwidth_bps
        self._free_at = 0.0
        self._lock = threading.Lock()

    def transmit(self, now: float, size: int) -> float:
        if not self.bandwidth_bps:
            return now
        with self._lock:
            self._free_at = max(now, self._free_at) + size * 8 / self.bandwidth_bps
            return self._free_at


class _Pump:
    """One direction of one connection: read, split into units, drop/delay, write in order."""

    def __init__(self, src: socket.socket, dst: socket.socket, direction: str, spec: LinkSpec, radio: _Radio,
                 rng: random.Random, stats: EmulatorStats, on_close):
        self.src, self.dst, self.direction = src, dst, direction
        self.spec, self.radio, self.rng, self.stats = spec, radio, rng, stats
        self.on_close = on_close
        self._queue: deque = deque()
        self._cv = threading.Condition()
        self._last_delivery = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"emu-{direction}-read")
        self._writer = threading.Thread(target=self._write, daemon=True, name=f"emu-{direction}-write")

    def start(self) -> None:
        self._reader.start()
        self._writer.start()

    def _read(self) -> None:
        splitter = ZmtpSplitter()
        try:
            while True:
                data = self.src.recv(1 << 16)
                if not data:
                    break
                for unit, droppable in splitter.feed(data):
                    if droppable:
                        self.stats.messages[self.direction] += 1
                        if self.spec.loss and self.rng.random() < self.spec.loss:
                            self.stats.dropped[self.direction] += 1
                            continue
                    self._schedule(unit)
        except OSError:
            pass
        self._schedule(None)  # end of stream, after what is still in flight

    def _schedule(self, unit: bytes | None) -> None:
        now = time.monotonic()
        sent = self.radio.transmit(now, len(unit)) if unit else now
        spec = self.spec
        delay = spec.rtt_s / 2 + (self.rng.uniform(-spec.jitter_s / 2, spec.jitter_s / 2) if spec.jitter_s else 0.0)
        with self._cv:
            self._last_delivery = max(self._last_delivery, sent + max(0.0, delay))
            self._queue.append((self._last_delivery, unit))
            self._cv.notify()

    def _write(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._queue:
                        self._cv.wait()
                    due, unit = self._queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        self._cv.wait(wait)
                        continue
                    self._queue.popleft()
                if unit is None:
                    break
                self.dst.sendall(unit)
                self.stats.bytes[self.direction] += len(unit)
        except OSError:
            pass
        self.on_close()


class LinkEmulator:
    """Listen on a loopback address and forward every connection to `forward` through the spec."""

    def __init__(self, listen: str, forward: str, spec: LinkSpec, seed: int | None = None):
        if not is_loopback(listen):
            raise ValueError(f"the link emulator listens on loopback only, not {listen}")
        self.listen_addr, self.forward_addr = tcp_address(listen), tcp_address(forward)
        self.spec = spec
        self.stats = EmulatorStats()
        self._rng = random.Random(seed)
        self._radios = {"up": _Radio(spec.bandwidth_bps), "down": _Radio(spec.bandwidth_bps)}
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._down_until = 0.0
        self._server = socket.create_server(self.listen_addr, reuse_port=False)
        self.port = self._server.getsockname()[1]
        self.endpoint = f"tcp://{self.listen_addr[0]}:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True, name="emu-accept")

    def start(self) -> "LinkEmulator":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()
        with self._lock:
            for s in list(self._sockets):
                _close(s)
            self._sockets.clear()

    def impair(self, rtt_s: float, jitter_s: float, loss: float) -> None:
        """From now on, on the connections open and to come: this delay, jitter and loss (a link
        getting worse or better; the bandwidth stays)."""
        new = LinkSpec(rtt_s, jitter_s, None, loss)  # validated
        self.spec.rtt_s, self.spec.jitter_s, self.spec.loss = new.rtt_s, new.jitter_s, new.loss

    def cut(self, down_s: float = 0.0) -> None:
        """The radio link lost: every open connection is dropped now, and for `down_s` seconds new
        ones are dropped as soon as they are made."""
        self._down_until = time.monotonic() + down_s
        with self._lock:
            for s in list(self._sockets):
                _close(s)
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                robot, _ = self._server.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                _close(robot)
                continue
            try:
                cloud = socket.create_connection(self.forward_addr, timeout=2.0)
                cloud.settimeout(None)
            except OSError:
                _close(robot)  # nothing listening upstream: the robot sees a dropped connection
                continue
            for s in (robot, cloud):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {robot, cloud}
                self.stats.connections += 1
                rng_up, rng_down = random.Random(self._rng.random()), random.Random(self._rng.random())

            def close(a=robot, b=cloud) -> None:
                with self._lock:
                    self._sockets.discard(a)
                    self._sockets.discard(b)
                _close(a)
                _close(b)

            _Pump(robot, cloud, "up", self.spec, self._radios["up"], rng_up, self.stats, close).start()
            _Pump(cloud, robot, "down", self.spec, self._radios["down"], rng_down, self.stats, close).start()


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
