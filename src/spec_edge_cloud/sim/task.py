"""Go-to-object episodes: how one is judged.

Success: the trunk centre comes within REACH_RADIUS of the goal's centre. Failure: the robot
falls, touches anything but the floor and the goal (a wall, another object), or runs out of time.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from spec_edge_cloud.sim.world import Go2World

REACH_RADIUS = 1.0       # m, trunk centre to goal centre: the nose is then within ~0.4 m of it
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Outcome:
    success: bool
    reason: str          # "reached", "fell", "collision", "timeout"
    distance: float      # m, trunk centre to goal centre when the episode ended
    time: float          # s of sim time since the episode started
    touched: tuple[str, ...] = ()

    def to_json(self) -> str:
        record = asdict(self)
        record["outcome"] = "success" if self.success else "fail"
        return json.dumps(record, sort_keys=True)


class Judge:
    """Watches one episode of a world and says when (and how) it is over."""

    def __init__(self, world: Go2World, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout must be positive, got {timeout_s}")
        self.world = world
        self.timeout_s = timeout_s
        self.start_time = world.time

    def check(self) -> Outcome | None:
        """The outcome if the episode is over now, else None."""
        w = self.world
        assert w.layout is not None
        elapsed = w.time - self.start_time
        distance = w.goal_distance()
        if w.fallen():
            return Outcome(False, "fell", distance, elapsed)
        touched = tuple(name for name in w.collisions() if name != w.layout.goal_object.name)
        if touched:
            return Outcome(False, "collision", distance, elapsed, touched)
        if distance <= REACH_RADIUS:
            return Outcome(True, "reached", distance, elapsed)
        if elapsed >= self.timeout_s:
            return Outcome(False, "timeout", distance, elapsed)
        return None
