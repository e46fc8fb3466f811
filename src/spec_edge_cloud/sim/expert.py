"""The scripted expert: it knows the ground truth and answers in the action language.

An answer is what the VLM should say for the current head-camera image: a short observation of
the goal, then actions. The observation only states what the picture shows (the goal's place in
the image, or that it is not in view), so a model can learn it from pixels. Whether the goal is
in view is read from a segmentation render of the same camera (occlusion included); distances and
bearings come from the simulator.

    goal in view:      red ball ahead left . turn left 25 . walk 1.2 . stop .
    path blocked:      ... turn right 30 . walk 1.4 . turn left 45 . walk 0.9 . stop .
    goal not in view:  no red ball in view . turn left 60 .
    goal reached:      red ball reached . stop .

The search always turns left by SEARCH_TURN_DEG, less than the camera's field of view, so a full
search misses nothing and the label is predictable from the image alone. A goal hidden behind
another object while the camera faces it would defeat the search: then the expert walks around
the object it knows is in the way, and marks the view `occluded` (the dataset leaves such views
out: the picture cannot tell that the goal is there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spec_edge_cloud.control.actions import (DEGREES_MAX, DEGREES_STEP, METRES_MAX, METRES_MIN, PERIOD,
                                             Action, format_action)
from spec_edge_cloud.sim import scene
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.task import REACH_RADIUS
from spec_edge_cloud.sim.world import Go2World

STOP_DISTANCE = 0.7          # m from the goal's centre where a walk ends (inside REACH_RADIUS)
SEARCH_TURN_DEG = 60
AHEAD_DEG = 10.0             # |bearing| up to this: "ahead"
AHEAD_SIDE_DEG = 25.0        # up to this: "ahead left/right"; beyond (still in view): "left/right"
MIN_VISIBLE_PIXELS_128 = 6   # goal pixels needed to call it in view, for a 128x128 image
FACING_DEG = 30.0            # |bearing| within this and not in view: the goal is hidden, not away
ROBOT_HALF_WIDTH = 0.25      # m, with the legs' swing
PATH_CLEARANCE = scene.OBJECT_RADIUS + ROBOT_HALF_WIDTH + 0.1
WAYPOINT_MARGIN = 0.6        # m, how far from the walls a detour may go


@dataclass(frozen=True)
class View:
    """What the expert knows about the goal right now."""

    visible: bool
    bearing_deg: float   # from the trunk heading to the goal, positive to the left
    distance: float      # m, trunk centre to goal centre

    @property
    def occluded(self) -> bool:
        """Facing the goal but not seeing it: something stands in between."""
        return not self.visible and abs(self.bearing_deg) <= FACING_DEG


def look(world: Go2World, camera: HeadCamera) -> View:
    assert world.layout is not None
    goal = world.layout.goal_object
    pixels = camera.geom_pixels(world.data, world.model.geom(goal.name).id)
    threshold = max(2, round(MIN_VISIBLE_PIXELS_128 * (camera.size / 128) ** 2))
    x, y, yaw = world.pose()
    bearing = math.degrees(math.remainder(math.atan2(goal.y - y, goal.x - x) - yaw, 2 * math.pi))
    return View(visible=pixels >= threshold, bearing_deg=bearing, distance=math.hypot(goal.x - x, goal.y - y))


def observation(goal_words: str, view: View) -> str:
    """The first sentence of the answer, from the view alone."""
    if view.distance <= REACH_RADIUS:
        return f"{goal_words} reached"
    if not view.visible:
        return f"no {goal_words} in view"
    side = "left" if view.bearing_deg > 0 else "right"
    if abs(view.bearing_deg) <= AHEAD_DEG:
        return f"{goal_words} ahead"
    if abs(view.bearing_deg) <= AHEAD_SIDE_DEG:
        return f"{goal_words} ahead {side}"
    return f"{goal_words} {side}"


def plan(world: Go2World, view: View) -> list[Action]:
    """Actions for the view: stop when reached, search when not in view, else go (around any
    object in the way) to STOP_DISTANCE short of the goal."""
    if view.distance <= REACH_RADIUS:
        return [Action("stop")]
    if not view.visible and not view.occluded:
        return [Action("turn", "left", SEARCH_TURN_DEG)]
    assert world.layout is not None
    goal = world.layout.goal_object
    x, y, yaw = world.pose()
    here, target = np.array([x, y]), np.array([goal.x, goal.y])
    stop_at = target - STOP_DISTANCE * (target - here) / np.linalg.norm(target - here)
    obstacles = [np.array([o.x, o.y]) for i, o in enumerate(world.layout.objects) if i != world.layout.goal]
    actions: list[Action] = []
    heading = yaw
    for point in _route(here, stop_at, obstacles):
        turn_actions, heading = _turn_towards(here, point, heading)
        actions += turn_actions
        metres = min(round(float(np.linalg.norm(point - here)), 1), METRES_MAX)
        if metres >= METRES_MIN:
            actions.append(Action("walk", amount=metres))
        here = here + metres * np.array([math.cos(heading), math.sin(heading)])
    return actions + [Action("stop")]


def answer(world: Go2World, camera: HeadCamera, view: View | None = None) -> str:
    """The expert's full answer text for the robot's current view (looked up unless given)."""
    assert world.layout is not None
    goal = world.layout.goal_object
    view = view or look(world, camera)
    sentences = [observation(f"{goal.colour} {goal.shape}", view)] + [format_action(a) for a in plan(world, view)]
    return " ".join(f"{s} {PERIOD}" for s in sentences)


def _turn_towards(here: np.ndarray, point: np.ndarray, heading: float) -> tuple[list[Action], float]:
    """A turn (rounded to DEGREES_STEP) that faces `point`, and the heading it leaves."""
    wanted = math.atan2(point[1] - here[1], point[0] - here[0])
    degrees = math.degrees(math.remainder(wanted - heading, 2 * math.pi))
    step = min(DEGREES_STEP * round(abs(degrees) / DEGREES_STEP), DEGREES_MAX)
    if step == 0:
        return [], heading
    sign = 1.0 if degrees > 0 else -1.0
    return [Action("turn", "left" if sign > 0 else "right", step)], heading + sign * math.radians(step)


def _route(start: np.ndarray, end: np.ndarray, obstacles: list[np.ndarray]) -> list[np.ndarray]:
    """Points to walk to: straight to `end`, or by one waypoint beside the first object in the
    way (the side that keeps both legs clear and stays in the room, shorter first)."""
    blocking = [o for o in obstacles if _too_close(start, end, o)]
    if not blocking:
        return [end]
    first = min(blocking, key=lambda o: float(np.dot(o - start, end - start)))
    direction = (end - start) / np.linalg.norm(end - start)
    normal = np.array([-direction[1], direction[0]])
    candidates = [first + side * (PATH_CLEARANCE + 0.15) * normal for side in (1.0, -1.0)]
    inside = scene.ROOM_HALF - WAYPOINT_MARGIN
    clear = [w for w in candidates if np.all(np.abs(w) <= inside)
             and not any(_too_close(start, w, o) or _too_close(w, end, o) for o in obstacles)]
    if not clear:
        return [end]  # boxed in: go straight and let the judge see what happens
    best = min(clear, key=lambda w: float(np.linalg.norm(w - start) + np.linalg.norm(end - w)))
    return [best, end]


def _too_close(a: np.ndarray, b: np.ndarray, obstacle: np.ndarray) -> bool:
    """Whether the segment a-b passes within PATH_CLEARANCE of an obstacle's centre."""
    ab = b - a
    t = float(np.clip(np.dot(obstacle - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - obstacle)) < PATH_CLEARANCE
