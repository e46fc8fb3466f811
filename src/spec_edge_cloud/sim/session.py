"""A running simulation for a node: world + head camera + judge + camera schedule + pacing.

Everything ros/sim_node.py does besides moving messages lives here, so that it is plain Python
and testable without ROS: the node only converts commands in and frames, poses and outcomes out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spec_edge_cloud.sim import episode, robot
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.task import DEFAULT_TIMEOUT_S, Judge, Outcome
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World


@dataclass(frozen=True)
class Step:
    """What one tick produced: a frame when the camera was due, the outcome on the tick an
    episode ended."""

    frame: np.ndarray | None
    outcome: Outcome | None


class SimSession:
    """One robot in the room, episode after episode."""

    def __init__(self, seed: int = 0, goal: tuple[str, str] | None = None, image_size: int = 128,
                 camera_rate_hz: float = 10.0, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not camera_rate_hz > 0:
            raise ValueError(f"camera_rate_hz must be positive, got {camera_rate_hz}")
        self.world = Go2World()
        self.camera = HeadCamera(self.world.model, image_size)
        self.frame_every = max(1, round(1.0 / (camera_rate_hz * robot.CONTROL_DT)))
        self.timeout_s = timeout_s
        self.reset(seed, goal)

    def reset(self, seed: int, goal: tuple[str, str] | None = None) -> None:
        """A new episode: the seed's layout (with `goal` if given), robot settled at its start."""
        episode.start(self.world, seed, goal)
        self.seed = seed
        self.judge = Judge(self.world, self.timeout_s)
        self.outcome: Outcome | None = None
        self._ticks = 0

    @property
    def instruction(self) -> str:
        assert self.world.layout is not None
        goal = self.world.layout.goal_object
        return instruction(goal.colour, goal.shape)

    def command(self, vx: float, vy: float, vyaw: float) -> np.ndarray:
        """The velocity interface (held 1 s, clamped); ValueError on non-finite values."""
        return self.world.set_velocity(vx, vy, vyaw)

    def step(self) -> Step:
        self.world.tick()
        self._ticks += 1
        ended = None
        if self.outcome is None:
            ended = self.outcome = self.judge.check()
        frame = self.camera.render(self.world.data) if self._ticks % self.frame_every == 0 else None
        return Step(frame, ended)

    def close(self) -> None:
        self.camera.close()


class Pacer:
    """How many ticks are due so that sim time runs `real_time_factor` times the wall clock
    (<= 0: as fast as possible, `burst` ticks per call). Falling more than `max_lag_ticks` behind
    drops the backlog instead of racing to catch up."""

    def __init__(self, real_time_factor: float, now: float, burst: int = 5, max_lag_ticks: int = 25) -> None:
        if not math.isfinite(real_time_factor):
            raise ValueError(f"real_time_factor must be finite, got {real_time_factor}")
        self.rtf = real_time_factor
        self.burst = burst
        self.max_lag = max_lag_ticks
        self._start = now
        self._done = 0

    def due(self, now: float) -> int:
        if self.rtf <= 0:
            return self.burst
        target = int((now - self._start) * self.rtf / robot.CONTROL_DT)
        if target - self._done > self.max_lag:
            self._done = target - self.max_lag
        n = max(0, target - self._done)
        self._done += n
        return n
