"""The robot's task loop without ROS (control/task_loop.py): when an instruction is answered again,
when a task ends (confirmed "reached", timeout, cancel, failure), on an injected clock; and its worker
thread driving real callbacks."""
import threading
import time

import pytest

from spec_edge_cloud.control.task_loop import (Answer, Cancelled, Halt, Task, TaskLoop, TaskSettings, TaskWorker,
                                               observation_reached, settings_from)

S = TaskSettings(replan_period_s=2.0, task_timeout_s=30.0, reached_confirmations=2, max_frame_age_s=1.0)


def test_reached_needs_consecutive_confirmations():
    task = Task("go to the red ball", 1, 0.0)
    assert not task.answered(True, 2)           # one look: keep going
    assert not task.answered(False, 2)          # the next look disagrees: the count starts over
    assert not task.answered(True, 2)
    assert task.answered(True, 2)               # two in a row: done
    assert Task("go to the red ball", 2, 0.0).answered(True, 1)


def test_only_a_reached_observation_counts():
    assert observation_reached("red ball reached . stop .".split())
    assert not observation_reached("red ball ahead . walk 1.2 . stop .".split())
    assert not observation_reached("no red ball in view . turn left 60 .".split())


def test_answers_need_a_task_and_a_fresh_frame_and_wait_the_replan_period():
    loop = TaskLoop()
    assert loop.next(0.0, S) is None                      # nothing to do
    loop.frame("f0", 0.0)
    assert loop.next(0.5, S) is None                      # a frame but no task
    task = loop.instruct("  go to the red ball ", 1.0)
    assert task.instruction == "go to the red ball" and task.number == 1
    assert loop.next(1.1, S) is None                      # the frame is 1.1 s old: too old
    loop.frame("f1", 1.2)
    step = loop.next(1.3, S)
    assert step == Answer(task, "f1")
    loop.answered(task, reached=False, failed=False, now=4.0, settings=S)
    loop.frame("f2", 5.5)
    assert loop.next(5.9, S) is None                      # replan period: not before 6.0
    assert loop.next(6.0, S) == Answer(task, "f2")


def test_two_reached_answers_in_a_row_end_the_task_with_a_halt():
    loop = TaskLoop()
    task = loop.instruct("go to the red ball", 0.0)
    loop.answered(task, True, False, 1.0, S)
    assert loop.task is task
    loop.answered(task, True, False, 3.5, S)
    assert loop.task is None
    assert loop.next(3.6, S) == Halt("task 1 done")
    assert loop.next(3.7, S) is None                      # one halt only


def test_timeout_ends_a_task_even_without_frames():
    loop = TaskLoop()
    loop.instruct("go to the red ball", 0.0)
    assert loop.next(29.0, S) is None
    assert loop.next(30.5, S) == Halt("task 1 timed out")
    task = loop.instruct("go to the blue box", 40.0)
    loop.answered(task, False, False, 71.0, S)             # an answer that ends after the timeout
    assert loop.next(71.0, S) == Halt("task 2 timed out")


def test_a_failed_answer_ends_the_task_and_an_empty_instruction_cancels_it():
    loop = TaskLoop()
    task = loop.instruct("go to the red ball", 0.0)
    loop.answered(task, False, True, 1.0, S)
    assert loop.next(1.0, S) == Halt("task 1 done")
    loop.instruct("go to the blue box", 2.0)
    assert loop.instruct("", 3.0) is None
    assert loop.next(3.0, S) == Halt("task cancelled (empty instruction)")
    assert loop.instruct("", 4.0) is None and loop.next(4.0, S) is None   # nothing to cancel: no halt


def test_an_answer_to_a_replaced_task_changes_nothing():
    loop = TaskLoop()
    old = loop.instruct("go to the red ball", 0.0)
    new = loop.instruct("go to the blue box", 1.0)
    loop.answered(old, True, False, 2.0, S)
    loop.answered(old, True, False, 2.5, S)
    assert loop.task is new and not loop.is_current(old)
    loop.frame("f", 2.6)
    assert loop.next(2.6, S) == Answer(new, "f")          # the new task is answered at once


def test_settings_are_validated_and_read_from_node_values():
    with pytest.raises(ValueError, match="reached_confirmations must be in"):
        TaskSettings(reached_confirmations=0)
    with pytest.raises(ValueError, match="replan_period_s must be in"):
        TaskSettings(replan_period_s=-1.0)
    assert settings_from({"replan_period_s": 0.5, "mode": "edge"}) == TaskSettings(replan_period_s=0.5)


class Robot:
    """What a draft node gives the worker: answers that take a little while, and stops. While `gate`
    is clear an answer waits, as a long decoding does."""

    def __init__(self, answers):
        self.answers, self.log, self.cancels = list(answers), [], 0
        self.gate = threading.Event()
        self.gate.set()
        self.worker = None

    def answer(self, task, frame):
        self.log.append(("answer", task.number, frame))
        self.gate.wait(5.0)
        time.sleep(0.02)
        if not self.worker.is_current(task):   # what the draft node's token callback checks
            raise Cancelled()
        result = self.answers.pop(0) if self.answers else False
        if result == "boom":
            raise RuntimeError("link broke")
        return result

    def halt(self, reason):
        self.log.append(("halt", reason))

    def cancel(self):
        self.cancels += 1


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.01)
    return cond()


def make_worker(robot, settings):
    worker = TaskWorker(robot.answer, robot.halt, robot.cancel, lambda: settings, time.monotonic, poll_s=0.01)
    robot.worker = worker
    worker.start()
    return worker


def test_the_worker_answers_until_reached_twice_then_stops_the_robot():
    robot = Robot([False, True, True])
    worker = make_worker(robot, TaskSettings(replan_period_s=0.05, reached_confirmations=2))
    try:
        worker.frame("frame")
        worker.instruct("go to the red ball")
        assert wait_for(lambda: ("halt", "task 1 done") in robot.log)
        assert robot.log == [("answer", 1, "frame")] * 3 + [("halt", "task 1 done")]
        assert worker.task is None and robot.cancels == 0
    finally:
        worker.close()


def test_the_worker_stops_the_robot_when_an_answer_fails():
    robot = Robot(["boom"])
    worker = make_worker(robot, TaskSettings(replan_period_s=0.05))
    try:
        worker.frame("frame")
        worker.instruct("go to the red ball")
        assert wait_for(lambda: ("halt", "task 1 done") in robot.log)
        assert robot.cancels == 1 and worker.task is None
    finally:
        worker.close()


def test_a_task_cancelled_mid_answer_abandons_the_answer_and_stops_the_robot():
    robot = Robot([True])
    robot.gate.clear()
    worker = make_worker(robot, TaskSettings(replan_period_s=0.05))
    try:
        worker.frame("frame")
        worker.instruct("go to the red ball")
        assert wait_for(lambda: robot.log == [("answer", 1, "frame")])
        worker.instruct("")          # cancelled while its answer is being decoded
        robot.gate.set()
        assert wait_for(lambda: ("halt", "task cancelled (empty instruction)") in robot.log)
        assert robot.cancels == 1 and robot.answers == [True]   # the abandoned answer counted for nothing
    finally:
        worker.close()


def test_closing_mid_answer_ends_the_thread_quietly_once_its_wait_is_cut(caplog):
    """The draft node's close: stop, close the link (the wait on the cloud ends with an error), join.
    The thread ends at once, without cancelling on a closed link or logging a failure, and the
    interpreter would have waited for it (not a daemon, so it never dies inside native code)."""
    robot = Robot(["boom"])            # the closed link: the answer's wait ends with an error
    robot.gate.clear()
    worker = make_worker(robot, TaskSettings(replan_period_s=0.05))
    assert not worker._thread.daemon
    worker.frame("frame")
    worker.instruct("go to the red ball")
    assert wait_for(lambda: robot.log == [("answer", 1, "frame")])
    worker.stop()
    robot.gate.set()                   # the link's close cuts the wait short
    worker.join(2.0)
    assert not worker.alive
    assert robot.cancels == 0 and robot.log == [("answer", 1, "frame")]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
