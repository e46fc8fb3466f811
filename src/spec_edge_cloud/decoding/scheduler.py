"""Fair sharing of one target model among several robots: round-robin, and one batched pass a turn.

Each robot (client) has a queue of work in arrival order; each piece of work is a generator that
yields the forward passes it needs (one per verification round, one per token of cloud decoding)
and gets each pass's result sent back. A turn takes the next `max_batch` clients that have work,
advances each one's oldest work to the pass it waits for, and runs all those passes together with
`run` (one padded forward pass on the target), so robots whose rounds are ready together share one
pass, and none waits behind another's long stream or burst by more than one pass. Work that ends
without asking for a pass (a prefill, a pre-draft dropped on a miss) takes a turn of its own.
Within a client, order is kept: a queued pre-draft runs right after the round it depends on.
Cancelling a session drops its queued work and stops its running stream before its next pass.
Work is counted per `group` (the authenticated peer a client belongs to), for admission caps.
Single-threaded by design: the server's one thread submits and runs.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Hashable


@dataclass
class Work:
    client: Hashable
    session: Hashable
    steps: Generator[Any, Any, None]
    cancelled: bool = False
    started: bool = False
    done: bool = False
    request: Any = None  # the pass it waits for
    group: Hashable = None
    queued_at: float = field(default_factory=time.monotonic)


class FairScheduler:
    def __init__(self, run: Callable[[list], list], on_error: Callable[[Work, Exception], None], max_batch: int = 8):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._run = run
        self._on_error = on_error
        self.max_batch = max_batch
        self._queues: dict[Hashable, deque[Work]] = {}
        self._turns: deque[Hashable] = deque()      # clients with work, in turn order
        self._counts: dict[Hashable, int] = {}      # queued work by group
        self.batches: dict[int, int] = {}           # passes run, by how many robots shared them
        self.waits: deque[float] = deque(maxlen=4096)  # seconds each work waited for its first turn (a fleet's load)

    def submit(self, work: Work) -> None:
        queue = self._queues.get(work.client)
        if queue is None:
            queue = self._queues[work.client] = deque()
            self._turns.append(work.client)
        queue.append(work)
        self._counts[work.group] = self._counts.get(work.group, 0) + 1

    def cancel(self, client: Hashable, session: Hashable | None = None) -> None:
        """Drop the client's queued work for `session` (None: all of it); a running stream stops
        before its next pass."""
        for work in self._queues.get(client, ()):
            if session is None or work.session == session:
                work.cancelled = True

    @property
    def busy(self) -> bool:
        return bool(self._turns)

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued(self, group: Hashable) -> int:
        return self._counts.get(group, 0)

    def run_once(self) -> bool:
        """One turn: the next clients' passes in one batch (or a pass-less step); False if idle."""
        if not self._turns:
            return False
        clients = [self._turns.popleft() for _ in range(min(self.max_batch, len(self._turns)))]
        ready = [w for w in map(self._ready, clients) if w is not None]
        if ready:
            self._run_batch(ready)
        for client in clients:
            queue = self._queues[client]
            self._drop_finished(queue)
            if queue:
                self._turns.append(client)
            else:
                del self._queues[client]
        return True

    def _ready(self, client: Hashable) -> Work | None:
        """The client's oldest live work, advanced to the pass it waits for; None if this turn went to
        work that needed no pass."""
        queue = self._queues[client]
        self._drop_finished(queue)
        if not queue:
            return None
        work = queue[0]
        if not work.started:
            work.started = True
            self.waits.append(time.monotonic() - work.queued_at)
            self._advance(work, work.steps.send, None)
        return None if work.done else work

    def _run_batch(self, ready: list[Work]) -> None:
        try:
            results = self._run([w.request for w in ready])
        except Exception as exc:
            if len(ready) > 1:  # one bad request must not fail the robots it was batched with
                for w in ready:
                    self._run_batch([w])
            else:
                self._advance(ready[0], ready[0].steps.throw, exc)
            return
        self.batches[len(ready)] = self.batches.get(len(ready), 0) + 1
        for w, result in zip(ready, results):
            self._advance(w, w.steps.send, result)

    def _advance(self, work: Work, step: Callable[[Any], Any], value: Any) -> None:
        try:
            work.request = step(value)
        except StopIteration:
            work.done = True
        except Exception as exc:  # one bad request must not stop the service for everyone
            work.done = True
            self._on_error(work, exc)

    def _drop_finished(self, queue: deque[Work]) -> None:
        while queue and (queue[0].done or queue[0].cancelled):
            work = queue.popleft()
            work.steps.close()
            if self._counts[work.group] > 1:
                self._counts[work.group] -= 1
            else:
                del self._counts[work.group]
