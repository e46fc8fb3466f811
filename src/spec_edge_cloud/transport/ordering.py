"""Sequence numbers in, frames in order out: duplicates and stale frames dropped, reordered ones restored.

Over one TCP connection ZeroMQ neither reorders nor duplicates, but a proxy, a replayed capture or a
faulty middlebox may, and a frame lost on the way (the link emulator drops whole messages) leaves a
gap. `InOrder` delivers frames of one sender in sequence: a frame older than the last delivered one
(a duplicate, or a stale copy) is dropped; a frame ahead of a gap is held until the gap fills or
`wait_s` passes (the missing frame is then taken as lost, and the held ones go out in order).
"""
from __future__ import annotations

from typing import Any


class InOrder:
    def __init__(self, wait_s: float = 0.02, max_held: int = 256):
        self.wait_s = wait_s
        self.max_held = max_held
        self.next = 0                       # the sequence number expected next
        self.held: dict[int, Any] = {}
        self.held_since: float | None = None
        self.dropped = 0                    # duplicates and stale frames
        self.reordered = 0                  # frames that arrived ahead of a gap
        self.skipped = 0                    # sequence numbers given up as lost

    def push(self, seq: int, item: Any, now: float) -> list[Any]:
        """Accept one frame; returns the frames now deliverable, in order."""
        if seq < self.next or seq in self.held:
            self.dropped += 1
            return []
        if seq > self.next:
            self.held[seq] = item
            self.reordered += 1
            if self.held_since is None:
                self.held_since = now
            return self.expire(now) if len(self.held) > self.max_held else []
        self.next += 1
        return [item] + self._drain(now)

    def expire(self, now: float, force: bool = False) -> list[Any]:
        """Give up on a gap that has been open for `wait_s` (or at once when forced / too much is held)."""
        if not self.held or not (force or len(self.held) > self.max_held or now - self.held_since >= self.wait_s):
            return []
        first = min(self.held)
        self.skipped += first - self.next
        self.next = first
        return self._drain(now)

    def deadline(self) -> float | None:
        """When the oldest open gap will be given up (None when nothing is held)."""
        return None if self.held_since is None else self.held_since + self.wait_s

    def _drain(self, now: float) -> list[Any]:
        out = []
        while self.next in self.held:
            out.append(self.held.pop(self.next))
            self.next += 1
        self.held_since = now if self.held else None
        return out
