"""MuJoCo Go2: real physics under the real walking policy follows velocity commands."""
import math

import numpy as np
import pytest

from spec_edge_cloud.sim import scene, tracking
from spec_edge_cloud.sim.velocity import COMMAND_HOLD_S, VELOCITY_LIMITS
from spec_edge_cloud.sim.world import Go2World


@pytest.fixture(scope="module")
def world():
    return Go2World()


def test_physics_steps_and_the_robot_stands_still(world):
    world.reset(scene.random_layout(1))
    x0, y0, yaw0 = world.pose()
    world.advance(2.0)
    assert world.time == pytest.approx(2.0, abs=1e-6)
    x1, y1, yaw1 = world.pose()
    assert not world.fallen() and 0.22 < world.height() < 0.4
    assert math.hypot(x1 - x0, y1 - y0) < 0.05
    assert abs(math.degrees(math.remainder(yaw1 - yaw0, 2 * math.pi))) < 3.0


def test_walk_forward_follows_the_command_and_drift_is_small(world):
    r = tracking.track(world, (0.5, 0.0, 0.0), 3.0)
    assert not r.fell
    assert r.speed[0] == pytest.approx(0.5, abs=0.05)
    assert r.forward == pytest.approx(1.5, abs=0.15)
    assert abs(r.sideways) < 0.15, f"sideways drift {r.sideways:.3f} m over {r.forward:.2f} m"
    assert abs(r.heading_change_deg) < 5.0


def test_turn_and_strafe_follow_the_command(world):
    turn = tracking.track(world, (0.0, 0.0, 1.0), 2.0)
    assert turn.heading_change_deg == pytest.approx(math.degrees(2.0), abs=8.0)
    assert turn.end_error < 0.15
    strafe = tracking.track(world, (0.0, -0.3, 0.0), 2.0)
    assert strafe.sideways == pytest.approx(-0.6, abs=0.1)
    assert abs(strafe.forward) < 0.1 and abs(strafe.heading_change_deg) < 5.0


def test_a_command_holds_one_second_then_the_robot_stops(world):
    world.reset(scene.Layout(objects=(scene.SceneObject("red", "ball", 2.5, 2.5),), goal=0, start=(-1.5, -1.0, 0.0)))
    world.advance(0.5)
    x0 = world.pose()[0]
    world.set_velocity(0.5, 0.0, 0.0)  # sent once, never repeated
    world.advance(0.8)
    assert world.twist()[0] > 0.3, "still walking inside the hold"
    world.advance(COMMAND_HOLD_S - 0.8 + 1.0)  # one second after the hold ran out
    x_stopped = world.pose()[0]
    assert 0.3 < x_stopped - x0 < 0.8
    world.advance(1.0)
    assert abs(world.pose()[0] - x_stopped) < 0.05
    assert np.linalg.norm(world.twist()[:2]) < 0.1


def test_velocity_interface_clamps_and_refuses_non_finite(world):
    world.reset(scene.random_layout(2))
    clamped = world.set_velocity(9.0, -9.0, 9.0)
    assert np.allclose(clamped, [VELOCITY_LIMITS[0], -VELOCITY_LIMITS[1], VELOCITY_LIMITS[2]])
    with pytest.raises(ValueError, match="finite"):
        world.set_velocity(float("nan"), 0.0, 0.0)

