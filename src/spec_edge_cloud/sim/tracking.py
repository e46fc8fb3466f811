"""How well the walking robot follows velocity commands: the figures docs/sim.md reports.

One trial holds a twist for a while (re-sent every tick, as a controller does), then sends a stop
and waits for the robot to come to rest. It reports the steady-state speed and yaw-rate errors, the heading
change and sideways drift over the whole run, and where the robot ended against where the
commanded twist integrates to (what matters when a plan is executed open-loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spec_edge_cloud.sim import robot, scene
from spec_edge_cloud.sim.world import Go2World

SETTLE_S = 1.0       # steady-state figures leave out the first second (acceleration)
STOP_WAIT_S = 2.0    # after the command lapses, time for the robot to come to rest


@dataclass(frozen=True)
class Tracking:
    command: tuple[float, float, float]
    duration: float
    speed: tuple[float, float, float]   # steady-state mean vx, vy (heading frame), yaw rate
    forward: float                      # final displacement along the start heading (m)
    sideways: float                     # final displacement across the start heading (m)
    heading_change_deg: float
    end_error: float                    # m, final position against the integrated command
    heading_error_deg: float            # final heading against the integrated command
    fell: bool


def _start_for(command: tuple[float, float, float], duration: float) -> tuple[float, float, float]:
    """A start pose that keeps the whole run inside the room: facing the diagonal, backed off by
    half the straight-line displacement."""
    yaw = math.pi / 4
    dx, dy = command[0] * duration, command[1] * duration
    c, s = math.cos(yaw), math.sin(yaw)
    return (-(c * dx - s * dy) / 2, -(s * dx + c * dy) / 2, yaw)


def expected_pose(start: tuple[float, float, float], command: tuple[float, float, float],
                  duration: float) -> tuple[float, float, float]:
    """Where a constant body twist held for `duration` takes a start pose (exact arc)."""
    x, y, yaw = start
    vx, vy, wz = command
    if abs(wz) < 1e-9:
        dx, dy = vx * duration, vy * duration
    else:
        a = wz * duration
        dx = (vx * math.sin(a) - vy * (1 - math.cos(a))) / wz
        dy = (vx * (1 - math.cos(a)) + vy * math.sin(a)) / wz
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * dx - s * dy, y + s * dx + c * dy, yaw + wz * duration


def track(world: Go2World, command: tuple[float, float, float], duration: float) -> Tracking:
    """Run one trial from a fresh standing start in an empty stretch of the room."""
    start = _start_for(command, duration)
    corner = scene.SceneObject("red", "ball", scene.ROOM_HALF - 0.3, -(scene.ROOM_HALF - 0.3))
    world.reset(scene.Layout(objects=(corner,), goal=0, start=start))
    world.advance(0.5)
    x0, y0, yaw0 = world.pose()
    t0 = world.time
    speeds, unwrapped, last_yaw = [], yaw0, yaw0
    while world.time - t0 < duration - 1e-9:
        world.set_velocity(*command)
        world.tick()
        yaw = world.pose()[2]
        unwrapped += math.remainder(yaw - last_yaw, 2 * math.pi)
        last_yaw = yaw
        if world.time - t0 >= SETTLE_S:
            speeds.append(world.twist())
    world.stop()  # a controller ends a motion with an explicit stop: a Move holds for 1 s
    world.advance(STOP_WAIT_S)
    x1, y1, yaw1 = world.pose()
    unwrapped += math.remainder(yaw1 - last_yaw, 2 * math.pi)
    c, s = math.cos(yaw0), math.sin(yaw0)
    ex, ey, eyaw = expected_pose((x0, y0, yaw0), command, duration)
    mean = np.mean(speeds, axis=0) if speeds else np.zeros(3)
    return Tracking(
        command=tuple(float(v) for v in command), duration=duration,
        speed=tuple(round(float(v), 4) for v in mean),
        forward=c * (x1 - x0) + s * (y1 - y0), sideways=-s * (x1 - x0) + c * (y1 - y0),
        heading_change_deg=math.degrees(unwrapped - yaw0),
        end_error=math.hypot(x1 - ex, y1 - ey),
        heading_error_deg=math.degrees(unwrapped - eyaw),
        fell=world.fallen())


STANDARD_TRIALS: tuple[tuple[tuple[float, float, float], float], ...] = (
    ((0.0, 0.0, 0.0), 4.0),
    ((0.5, 0.0, 0.0), 4.0),
    ((1.0, 0.0, 0.0), 3.0),
    ((-0.5, 0.0, 0.0), 3.0),
    ((0.0, 0.3, 0.0), 4.0),
    ((0.0, -0.3, 0.0), 4.0),
    ((0.0, 0.0, 1.0), 3.0),
    ((0.0, 0.0, -1.0), 3.0),
    ((0.5, 0.0, 0.5), 3.0),
)
