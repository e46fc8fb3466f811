"""Fair sharing of the target: round-robin by robot, one step at a time, cancellation, errors."""
from __future__ import annotations

from spec_edge_cloud.transport.scheduler import FairScheduler, Work


def stream(log: list, name: str, n: int, fail_at: int | None = None):
    """Like the service's cloud decoding: a turn ends before each token."""
    for i in range(n):
        yield
        if i == fail_at:
            raise ValueError(f"{name} broke")
        log.append(f"{name}{i}")


def single(log: list, name: str):
    """Like a DRAFT or a PREFILL: the whole work in one step."""
    log.append(name)
    return
    yield


def drain(s: FairScheduler) -> int:
    n = 0
    while s.run_once():
        n += 1
    return n


def test_a_long_stream_is_interleaved_with_other_robots_rounds():
    log, errors = [], []
    s = FairScheduler(lambda w, e: errors.append(e))
    s.submit(Work("A", "a", stream(log, "stream", 6)))
    for r in range(3):
        s.submit(Work("B", "b", single(log, f"round{r}")))
    s.submit(Work("C", "c", single(log, "prefill")))
    drain(s)
    # one step per robot per turn: B's rounds never wait for A's whole stream
    assert log == ["round0", "prefill", "stream0", "round1", "stream1", "round2", "stream2", "stream3", "stream4",
                   "stream5"]
    assert not errors and not s.busy


def test_order_within_one_robot_is_kept():
    log = []
    s = FairScheduler(lambda w, e: None)
    for r in range(3):
        s.submit(Work("A", "a", stream(log, f"r{r}.", 2)))
    drain(s)
    assert log == ["r0.0", "r0.1", "r1.0", "r1.1", "r2.0", "r2.1"]


def test_cancel_drops_queued_work_and_stops_a_running_stream():
    log = []
    s = FairScheduler(lambda w, e: None)
    s.submit(Work("A", "a", stream(log, "stream", 100)))
    s.submit(Work("A", "a", single(log, "queued")))
    s.submit(Work("A", "other", single(log, "kept")))
    for _ in range(3):
        s.run_once()
    s.cancel("A", "a")
    drain(s)
    assert log == ["stream0", "stream1", "kept"]


def test_a_failing_step_is_reported_and_the_others_go_on():
    log, errors = [], []
    s = FairScheduler(lambda w, e: errors.append((w.session, str(e))))
    s.submit(Work("A", "bad", stream(log, "bad", 5, fail_at=1)))
    s.submit(Work("B", "good", stream(log, "good", 3)))
    drain(s)
    assert errors == [("bad", "bad broke")] and log == ["bad0", "good0", "good1", "good2"]
