"""Running answers in the world: open-loop execution of actions, and the expert-in-the-loop episode.

Actions become velocity segments through control/actions.py (the same timing the robot's command
layer uses). A segment is driven by re-sending its twist every policy tick, as the safety gate
re-sends Move; a `stop` action, and the end of an answer, send an explicit stop.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from spec_edge_cloud.control.actions import Action, action_segments, parse_answer
from spec_edge_cloud.sim import expert, robot, scene
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.task import DEFAULT_TIMEOUT_S, Judge, Outcome
from spec_edge_cloud.sim.world import Go2World

REPLAN_S = 2.0          # closed loop: ask the expert again after this much sim time
SETTLE_S = 0.3          # after an answer is done, let the trim finish before looking again
START_SETTLE_S = 0.5    # stand still after a reset before the episode clock starts

Tick = Callable[[Go2World], None]


def execute(world: Go2World, actions: Sequence[Action], judge: Judge, on_tick: Tick | None = None,
            budget_s: float | None = None, ready_s: Sequence[float] | None = None) -> Outcome | None:
    """Drive the actions open-loop until they are done, the episode ends (its Outcome is returned)
    or `budget_s` of sim time has passed (then the robot keeps its current command).

    `ready_s[i]`: sim seconds after the call at which action i exists (it was still being decoded
    before); the robot stands until then, as the robot's command node holds still between a new
    response's start and its first complete action. None: every action is there at once."""
    start = world.time
    deadline = start + budget_s if budget_s is not None else float("inf")
    for i, action in enumerate(actions):
        if ready_s is not None and world.time < start + ready_s[i]:
            outcome = _hold(world, judge, on_tick, min(start + ready_s[i], deadline))
            if outcome is not None or world.time >= deadline:
                return outcome
        for segment in action_segments(action):
            if segment.duration <= 0.0:
                world.stop()
            ticks = round(segment.duration / robot.CONTROL_DT)
            for _ in range(ticks):
                world.set_velocity(segment.vx, segment.vy, segment.vyaw)
                outcome = _tick(world, judge, on_tick)
                if outcome is not None:
                    return outcome
                if world.time >= deadline:
                    return None
    return _hold(world, judge, on_tick, min(world.time + SETTLE_S, deadline))


def _hold(world: Go2World, judge: Judge, on_tick: Tick | None, until: float) -> Outcome | None:
    """Stand still until sim time `until`, or until the episode ends (its Outcome)."""
    world.stop()
    while world.time < until:
        outcome = _tick(world, judge, on_tick)
        if outcome is not None:
            return outcome
    return None


def _tick(world: Go2World, judge: Judge, on_tick: Tick | None) -> Outcome | None:
    world.tick()
    if on_tick is not None:
        on_tick(world)
    return judge.check()


def start(world: Go2World, seed: int, goal: tuple[str, str] | None = None) -> None:
    """Reset the world to the seed's layout and let the robot settle on its feet."""
    world.reset(scene.random_layout(seed, goal))
    world.advance(START_SETTLE_S)


def run_with_expert(world: Go2World, camera: HeadCamera, replan_s: float | None = REPLAN_S,
                    timeout_s: float = DEFAULT_TIMEOUT_S, on_tick: Tick | None = None,
                    on_answer: Callable[[str], None] | None = None) -> Outcome:
    """From the world's current state: the expert answers from the current view, the answer is
    parsed as the robot would parse it and executed, repeat. Closed loop re-plans after
    `replan_s` of sim time; `replan_s=None` runs every answer open-loop to its end."""
    judge = Judge(world, timeout_s)
    outcome = judge.check()
    while outcome is None:
        text = expert.answer(world, camera)
        if on_answer is not None:
            on_answer(text)
        _, actions = parse_answer(text)
        outcome = execute(world, actions, judge, on_tick, budget_s=replan_s)
    world.stop()
    return outcome
