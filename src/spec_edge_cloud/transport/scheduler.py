"""Fair sharing of one target model among several robots: round-robin, one step at a time.

Each robot (client) has a queue of work in arrival order; each piece of work is a generator of steps
(one verification pass, one prefill, one token of cloud decoding). The server takes one step from
the next client that has work, then moves on to the next client, so a long cloud-decoding stream or
a burst from one robot never holds the others back by more than one step each. Within a client,
order is kept: a queued pre-draft runs right after the round it depends on, when that client's turn
comes. Cancelling a session drops its queued work and stops its running stream after the current
step. Single-threaded by design: the server's one thread submits and runs.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Generator, Hashable


@dataclass
class Work:
    client: Hashable
    session: str
    steps: Generator[None, None, None]
    cancelled: bool = False


class FairScheduler:
    def __init__(self, on_error: Callable[[Work, Exception], None]):
        self._queues: dict[Hashable, deque[Work]] = {}
        self._turns: deque[Hashable] = deque()      # clients with work, in turn order
        self._on_error = on_error

    def submit(self, work: Work) -> None:
        queue = self._queues.get(work.client)
        if queue is None:
            queue = self._queues[work.client] = deque()
            self._turns.append(work.client)
        queue.append(work)

    def cancel(self, client: Hashable, session: str) -> None:
        for work in self._queues.get(client, ()):
            if work.session == session:
                work.cancelled = True

    @property
    def busy(self) -> bool:
        return bool(self._turns)

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def run_once(self) -> bool:
        """Run one step of the next client's oldest work; False if there is none."""
        if not self._turns:
            return False
        client = self._turns.popleft()
        queue = self._queues[client]
        work = queue[0]
        done = work.cancelled
        if not done:
            try:
                next(work.steps)
            except StopIteration:
                done = True
            except Exception as exc:  # one bad request must not stop the service for everyone
                done = True
                self._on_error(work, exc)
        if done or work.cancelled:
            queue.popleft()
            work.steps.close()
        if queue:
            self._turns.append(client)
        else:
            del self._queues[client]
        return True
