"""Head camera: CPU offscreen rendering gives real pictures that change as the robot turns."""
import numpy as np
import pytest

from spec_edge_cloud.sim import scene
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.world import Go2World


@pytest.fixture(scope="module")
def world():
    return Go2World()


@pytest.mark.parametrize("size", [128, 224])
def test_renders_non_blank_images_that_change_as_the_robot_turns(world, size):
    world.reset(scene.random_layout(4))
    world.advance(0.3)
    camera = HeadCamera(world.model, size)
    try:
        before = camera.render(world.data)
        assert before.shape == (size, size, 3) and before.dtype == np.uint8
        assert before.std() > 10, "a blank image"
        for _ in range(60):  # about 70 degrees
            world.set_velocity(0.0, 0.0, 1.2)
            world.tick()
        after = camera.render(world.data)
        assert np.abs(after.astype(int) - before.astype(int)).mean() > 5
    finally:
        camera.close()


def test_goal_object_shows_in_its_own_colour(world):
    """Stand 2 m from the goal, facing it: its pixels (by segmentation) carry its paint."""
    goal = scene.SceneObject("blue", "box", 1.0, 0.0)
    world.reset(scene.Layout(objects=(goal,), goal=0, start=(-1.0, 0.0, 0.0)))
    world.advance(0.3)
    camera = HeadCamera(world.model, 128)
    try:
        gid = world.model.geom(goal.name).id
        assert camera.geom_pixels(world.data, gid) > 100
        image = camera.render(world.data).astype(int)
        centre = image[50:90, 54:74].reshape(-1, 3).mean(axis=0)
        assert centre[2] > centre[0] + 60 and centre[2] > centre[1] + 40, f"not blue: {centre}"
    finally:
        camera.close()


def test_rejects_sizes_it_cannot_render(world):
    with pytest.raises(ValueError, match="image size"):
        HeadCamera(world.model, 8)
    with pytest.raises(ValueError, match="image size"):
        HeadCamera(world.model, scene.MAX_IMAGE_SIZE + 1)
