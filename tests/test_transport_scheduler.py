"""Fair sharing of the target: one batched pass a turn across robots, order, cancellation, errors."""
from __future__ import annotations

import pytest

from spec_edge_cloud.decoding.scheduler import FairScheduler, Work


class Runner:
    """Stands for the target: records which passes ran together and answers each with its name."""

    def __init__(self, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, requests: list[str]) -> list[str]:
        if self.fail_on in requests:
            raise ValueError(f"{self.fail_on} is malformed")
        self.batches.append(list(requests))
        return [f"done:{r}" for r in requests]


def stream(log: list, name: str, n: int, fail_at: int | None = None):
    """Like the service's cloud decoding: one pass per token."""
    for i in range(n):
        result = yield f"{name}{i}"
        if i == fail_at:
            raise RuntimeError(f"{name} broke")
        log.append(result)


def passless(log: list, name: str):
    """Like a PREFILL, or a pre-draft dropped on a miss: work that needs no verification pass."""
    log.append(name)
    return
    yield


def drain(s: FairScheduler) -> int:
    n = 0
    while s.run_once():
        n += 1
    return n


def test_robots_ready_together_share_one_pass():
    log, run = [], Runner()
    s = FairScheduler(run, lambda w, e: None)
    s.submit(Work("A", "a", stream(log, "a", 3)))
    s.submit(Work("B", "b", stream(log, "b", 1)))
    s.submit(Work("C", "c", stream(log, "c", 2)))
    assert drain(s) == 3
    assert run.batches == [["a0", "b0", "c0"], ["a1", "c1"], ["a2"]]
    assert log == ["done:a0", "done:b0", "done:c0", "done:a1", "done:c1", "done:a2"]
    assert s.batches == {3: 1, 2: 1, 1: 1} and not s.busy


def test_max_batch_bounds_a_pass_and_turns_rotate():
    run = Runner()
    s = FairScheduler(run, lambda w, e: None, max_batch=2)
    for name in "ABC":
        s.submit(Work(name, name, stream([], name, 2)))
    drain(s)
    assert run.batches == [["A0", "B0"], ["C0", "A1"], ["B1", "C1"]]
    with pytest.raises(ValueError):
        FairScheduler(run, lambda w, e: None, max_batch=0)


def test_a_long_stream_is_interleaved_with_other_robots_rounds():
    log, run = [], Runner()
    s = FairScheduler(run, lambda w, e: None, max_batch=1)
    s.submit(Work("A", "a", stream(log, "stream", 4)))
    for r in range(3):
        s.submit(Work("B", "b", stream(log, f"round{r}.", 1)))
    s.submit(Work("C", "c", passless(log, "prefill")))
    drain(s)
    # one turn per robot: B's rounds never wait for A's whole stream; C's prefill takes its own turn
    assert log == ["done:stream0", "done:round0.0", "prefill", "done:stream1", "done:round1.0", "done:stream2",
                   "done:round2.0", "done:stream3"]


def test_order_within_one_robot_is_kept():
    log, run = [], Runner()
    s = FairScheduler(run, lambda w, e: None)
    for r in range(3):
        s.submit(Work("A", "a", stream(log, f"r{r}.", 2)))
    drain(s)
    assert run.batches == [["r0.0"], ["r0.1"], ["r1.0"], ["r1.1"], ["r2.0"], ["r2.1"]]


def test_cancel_drops_queued_work_and_stops_a_running_stream_before_its_next_pass():
    log, run = [], Runner()
    s = FairScheduler(run, lambda w, e: None)
    s.submit(Work("A", "a", stream(log, "stream", 100)))
    s.submit(Work("A", "a", stream(log, "queued", 1)))
    s.submit(Work("A", "other", stream(log, "kept", 1)))
    for _ in range(3):
        s.run_once()
    s.cancel("A", "a")
    drain(s)
    assert log == ["done:stream0", "done:stream1", "done:stream2", "done:kept0"]
    assert "stream3" not in sum(run.batches, [])


def test_a_failing_step_is_reported_and_the_others_go_on():
    log, errors, run = [], [], Runner()
    s = FairScheduler(run, lambda w, e: errors.append((w.session, str(e))))
    s.submit(Work("A", "bad", stream(log, "bad", 5, fail_at=1)))
    s.submit(Work("B", "good", stream(log, "good", 3)))
    drain(s)
    assert errors == [("bad", "bad broke")]
    assert log == ["done:bad0", "done:good0", "done:good1", "done:good2"]


def test_a_pass_that_fails_in_a_batch_fails_only_its_own_robot():
    """The batch is re-run one robot at a time; the bad request's error goes into its own work."""
    log, errors, run = [], [], Runner(fail_on="bad0")
    s = FairScheduler(run, lambda w, e: errors.append((w.session, str(e))))
    s.submit(Work("A", "bad", stream(log, "bad", 2)))
    s.submit(Work("B", "good", stream(log, "good", 2)))
    drain(s)
    assert errors == [("bad", "bad0 is malformed")]
    assert log == ["done:good0", "done:good1"] and run.batches == [["good0"], ["good1"]]
