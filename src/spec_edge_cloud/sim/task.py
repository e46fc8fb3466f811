"""Go-to-object episodes: how one is judged.

Success: the trunk centre comes within REACH_RADIUS of the goal's centre. Failure: the robot
falls, touches anything but the floor and the goal (a wall, another object), or runs out of time
(and, in a model's closed loop, training/sim_eval.py: the model ends the task away from the goal).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from spec_edge_cloud.sim.world import Go2World

REACH_RADIUS = 1.0       # m, trunk centre to goal centre: the nose is then within ~0.4 m of it
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Outcome:
    success: bool
    reason: str          # "reached", "fell", "collision", "timeout", "stopped" (ended by the model)
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


def success_interval(successes: int, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% by default): honest at 0 or n successes and
    with the few episodes a closed-loop run affords, where the normal approximation is not."""
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    p = successes / episodes
    centre = (p + z * z / (2 * episodes)) / (1 + z * z / episodes)
    half = z * math.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes)) / (1 + z * z / episodes)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)
