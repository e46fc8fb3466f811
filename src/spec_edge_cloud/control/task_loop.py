"""The robot's task loop: when to answer an instruction again, and when the task is over.

An instruction starts a task. While it runs, the robot answers it from the freshest camera frame,
waits `replan_period_s` after each answer, and answers again (the world moved; so did the robot).
The task ends when the answers say the goal is reached (an observation ending in "reached") in
`reached_confirmations` answers in a row (one look can mistake a far goal for a near one), on an
empty instruction, when an answer fails, or after `task_timeout_s`; the robot is then stopped.

Plain Python with an injected clock, like controller.py: `TaskLoop` is the decision logic (no
threads, no I/O, every method takes `now`), `TaskWorker` runs it on a thread of its own and calls
back to decode an answer and to stop the robot. The draft node feeds it instructions and frames.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, Generic, TypeVar

from spec_edge_cloud.decoding.modes import check_ranges, setting

from .parser import IncrementalParser, Observation

log = logging.getLogger(__name__)
FrameT = TypeVar("FrameT")


@dataclass(frozen=True)
class TaskSettings:
    replan_period_s: float = setting(2.0, "after an answer, wait this long before the next, while the task runs",
                                     (0.0, None))
    task_timeout_s: float = setting(120.0, "stop answering one instruction after this long", (0.001, None))
    reached_confirmations: int = setting(2, "answers in a row saying the goal is reached that end the task "
                                            "(1: the first one does)", (1, None))
    max_frame_age_s: float = setting(1.0, "answer only from a frame received less than this long ago",
                                     (0.001, None))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class Task:
    instruction: str
    number: int
    started: float
    reached: int = 0  # answers in a row that said the goal is reached

    def answered(self, reached: bool, confirmations: int) -> bool:
        """Count one answer; True once `confirmations` answers in a row said the goal is reached."""
        self.reached = self.reached + 1 if reached else 0
        return self.reached >= confirmations


def says_reached(observation: str | None) -> bool:
    """True when an answer's observation says the goal is reached ("red ball reached")."""
    return bool(observation) and observation.split()[-1:] == ["reached"]


def observation_reached(words: list[str]) -> bool:
    """True when the answer's observation says the goal is reached ("red ball reached .")."""
    parser = IncrementalParser()
    for w in words:
        for event in parser.feed(w):
            if isinstance(event, Observation):
                return says_reached(event.text)
    return False


@dataclass(frozen=True)
class Answer(Generic[FrameT]):
    """Decode an answer to `task` from `frame` now."""
    task: Task
    frame: FrameT


@dataclass(frozen=True)
class Halt:
    """Stop the robot (an empty answer): the task is over, for `reason`."""
    reason: str


class TaskLoop(Generic[FrameT]):
    """What the robot should do next about its task, given instructions, frames and answers."""

    def __init__(self) -> None:
        self.task: Task | None = None
        self.tasks = 0
        self._frame: tuple[FrameT, float] | None = None   # the latest frame and when it came
        self._due = 0.0                                    # no answer before this time
        self._halt: str | None = None                      # a stop still to be sent

    def instruct(self, text: str, now: float) -> Task | None:
        """A new instruction replaces the task; an empty one cancels it. Returns the new task."""
        text = text.strip()
        if text:
            self.tasks += 1
            self.task, self._due = Task(text, self.tasks, now), now
            return self.task
        if self.task is not None:
            self.task, self._halt = None, "task cancelled (empty instruction)"
        return None

    def frame(self, frame: FrameT, now: float) -> None:
        self._frame = (frame, now)

    def next(self, now: float, settings: TaskSettings) -> Answer[FrameT] | Halt | None:
        """The next thing to do at `now`, or None to wait (for a frame, or the replan period)."""
        if self.task is not None and now - self.task.started > settings.task_timeout_s:
            self.task, self._halt = None, f"task {self.task.number} timed out"   # e.g. no frames came
        if self._halt is not None:
            halt, self._halt = Halt(self._halt), None
            return halt
        if self.task is None or now < self._due or self._frame is None:
            return None
        frame, received = self._frame
        if now - received > settings.max_frame_age_s:
            return None
        return Answer(self.task, frame)

    def answered(self, task: Task, reached: bool, failed: bool, now: float, settings: TaskSettings) -> None:
        """The answer to `task` is complete (`failed`: it could not be made). Ignored if the task was
        replaced or cancelled meanwhile."""
        if task is not self.task:
            return
        self._due = now + settings.replan_period_s
        timed_out = now - task.started > settings.task_timeout_s
        if task.answered(reached, settings.reached_confirmations) or failed or timed_out:
            self.task = None
            self._halt = f"task {task.number} {'timed out' if timed_out else 'done'}"

    def is_current(self, task: Task) -> bool:
        return task is self.task


class Cancelled(Exception):
    """The task changed while its answer was being decoded (raised from the answer's callbacks)."""


class TaskWorker(Generic[FrameT]):
    """Runs a TaskLoop on its own thread: `answer(task, frame)` decodes one answer (True: the goal is
    reached) and may raise Cancelled once `is_current(task)` is False; `halt(reason)` stops the
    robot; `cancel()` abandons a decoding cut short. `settings()` is read before each decision, so
    changes apply from the next answer. `clock` is the one clock of every decision (the node's)."""

    def __init__(self, answer: Callable[[Task, FrameT], bool], halt: Callable[[str], None],
                 cancel: Callable[[], None], settings: Callable[[], TaskSettings], clock: Callable[[], float],
                 poll_s: float = 0.05) -> None:
        self.loop: TaskLoop[FrameT] = TaskLoop()
        self._answer, self._halt, self._cancel = answer, halt, cancel
        self._settings, self._clock, self._poll_s = settings, clock, poll_s
        self._cv = threading.Condition()
        self._closing = False
        # Not a daemon: the interpreter must not finalize while it is inside a model's forward pass or
        # a socket call (Python 3.11 ends such a thread by unwinding its native frames: the process
        # aborts with "terminate called without an active exception"). `close()` ends it promptly.
        self._thread = threading.Thread(target=self._run, name="task-worker")

    def start(self) -> None:
        self._thread.start()

    def instruct(self, text: str) -> Task | None:
        with self._cv:
            task = self.loop.instruct(text, self._clock())
            self._cv.notify_all()
        return task

    def frame(self, frame: FrameT) -> None:
        with self._cv:
            self.loop.frame(frame, self._clock())
            self._cv.notify_all()

    def is_current(self, task: Task) -> bool:
        with self._cv:
            return self.loop.is_current(task)

    @property
    def task(self) -> Task | None:
        return self.loop.task

    @property
    def alive(self) -> bool:
        """The thread that answers is running (a dead one must not look alive to the command node)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                step = None
                while not self._closing and step is None:
                    step = self.loop.next(self._clock(), self._settings())
                    if step is None:
                        self._cv.wait(self._poll_s)   # the clock may be sim time: look again soon
                if self._closing:
                    return
            if isinstance(step, Halt):
                self._halt(step.reason)
                continue
            failed, reached = False, False
            try:
                reached = self._answer(step.task, step.frame)
            except Exception as e:
                if self._closing:   # cut short by close(): the node is going, nobody to tell
                    return
                if isinstance(e, Cancelled):
                    self._cancel()
                    continue
                # a broken link or model: report it, stop the robot, wait for a new task
                log.error(f"answer to task {step.task.number} failed: {type(e).__name__}: {e}")
                self._cancel()
                failed = True
            with self._cv:
                self.loop.answered(step.task, reached, failed, self._clock(), self._settings())

    def stop(self) -> None:
        """Answer no more: the answer in flight ends at its next token (`is_current` turns False)."""
        with self._cv:
            self._closing = True
            self.loop.task = None
            self._cv.notify_all()

    def join(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self.stop()
        self.join(timeout_s)


def settings_from(values: dict[str, Any]) -> TaskSettings:
    """The TaskSettings among a node's parameter values."""
    return TaskSettings(**{k: values[k] for k in (f.name for f in fields(TaskSettings)) if k in values})
