"""The head camera: RGB images from the Go2's nose, rendered offscreen on the CPU.

Rendering runs on Mesa's software rasteriser (MUJOCO_GL=egl), so the scene is kept cheap: no
shadows, reflections, skybox or haze, and the robot's own meshes (geom group 2) are left out:
from the nose they are never in the picture but would still cost their triangles every frame.
The same renderer also answers "which pixels show geom g" (segmentation), which is how the
expert knows exactly whether the goal is in view.
"""
from __future__ import annotations


import mujoco
import numpy as np

from spec_edge_cloud.sim import robot, scene

ROBOT_MESH_GROUP = 2
IMAGE_SIZES = (128, 224)  # what the project uses; any size from 16 to scene.MAX_IMAGE_SIZE works


class HeadCamera:
    """Square RGB (and segmentation) images from the robot's head camera."""

    def __init__(self, model: mujoco.MjModel, size: int = 128) -> None:
        if not 16 <= size <= scene.MAX_IMAGE_SIZE:
            raise ValueError(f"image size must be 16..{scene.MAX_IMAGE_SIZE} pixels, got {size}")
        self.size = size
        try:
            self._renderer = mujoco.Renderer(model, height=size, width=size)
        except mujoco.FatalError as e:
            raise RuntimeError(
                f"no offscreen OpenGL context ({e}): MUJOCO_GL must be 'egl' (or 'osmesa') before "
                "mujoco is first imported; import spec_edge_cloud.sim first or export MUJOCO_GL=egl"
            ) from e
        self._camera = model.camera(scene.ROBOT_PREFIX + robot.HEAD_CAMERA).id
        self._option = mujoco.MjvOption()
        self._option.geomgroup[ROBOT_MESH_GROUP] = 0
        flags = self._renderer.scene.flags
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG,
                     mujoco.mjtRndFlag.mjRND_HAZE):
            flags[flag] = 0

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """An (size, size, 3) uint8 RGB image of what the head camera sees now."""
        self._renderer.update_scene(data, camera=self._camera, scene_option=self._option)
        return self._renderer.render()

    def geom_pixels(self, data: mujoco.MjData, geom_id: int) -> int:
        """How many pixels of the image show geom `geom_id` (occlusion included)."""
        self._renderer.enable_segmentation_rendering()
        try:
            self._renderer.update_scene(data, camera=self._camera, scene_option=self._option)
            seg = self._renderer.render()
        finally:
            self._renderer.disable_segmentation_rendering()
        ids, types = seg[..., 0], seg[..., 1]
        return int(np.count_nonzero((ids == geom_id) & (types == mujoco.mjtObj.mjOBJ_GEOM)))

    def close(self) -> None:
        self._renderer.close()
