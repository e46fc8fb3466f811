"""The robot's view of the cloud: send messages, receive replies. Interchangeable implementations.

`InProcessLink` runs a `VerifierService` on a thread of this process and delivers every message
after a one-way delay (half the round trip), so the whole protocol, early verdicts and pre-drafts
included, runs without a network. The service is driven as the ZeroMQ server drives it (messages
submitted as they arrive, a turn of its scheduler at a time), so cancelling and round handling are
the same on both. The ZeroMQ link (`transport`) has the same two methods.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from typing import Protocol

import msgspec

from ..modeling import jpeg
from .messages import Start
from .verifier import VerifierService


class Link(Protocol):
    def send(self, msg: object) -> None: ...

    def recv(self, timeout: float) -> object | None: ...

    def close(self) -> None: ...


class _DelayLine:
    """A queue whose items come out `delay` seconds after they were put in."""

    def __init__(self, delay: float):
        self.delay = delay
        self._heap: list = []
        self._count = itertools.count()
        self._cv = threading.Condition()
        self._closed = False

    def close(self) -> None:
        """Wake every waiting `get`; from now on it returns None at once."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def put(self, item: object) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + self.delay, next(self._count), item))
            self._cv.notify_all()

    def get(self, timeout: float | None) -> object | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._closed:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    return heapq.heappop(self._heap)[2]
                wait = (self._heap[0][0] - now) if self._heap else None
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cv.wait(wait)
            return None


class InProcessLink:
    def __init__(self, service: VerifierService, rtt_s: float = 0.0):
        self.service = service
        self.rtt_s = rtt_s
        self._up = _DelayLine(rtt_s / 2)
        self._down = _DelayLine(rtt_s / 2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="inprocess-verifier", daemon=True)
        self._thread.start()

    def send(self, msg: object) -> None:
        if self._closed.is_set():
            raise RuntimeError("link is closed")   # as the ZeroMQ link
        if isinstance(msg, Start) and isinstance(msg.image, bytes):  # the prompt's JPEG: the service takes pixels
            msg = msgspec.structs.replace(msg, image=jpeg.decode(msg.image))
        self._up.put(msg)

    def recv(self, timeout: float) -> object | None:
        """The next reply; None after `timeout`, and at once after `close()` (a robot node that is
        stopping does not wait out a round's deadline, as with the ZeroMQ link)."""
        return self._down.get(timeout)

    def close(self) -> None:
        self._closed.set()
        self._up.put(None)    # the service still takes what was sent before (a session's END frees its slot)
        self._down.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        service = self.service
        while not self._closed.is_set():
            msg = self._up.get(timeout=0 if service.busy else 0.5)
            while msg is not None:  # take in everything that has arrived, then one turn of work
                service.submit(self, self, msg, self._down.put)
                msg = self._up.get(timeout=0)
            service.run_once()
