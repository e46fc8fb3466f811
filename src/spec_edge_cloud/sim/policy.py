"""The walking policy: 45 observations -> 12 joint position targets, run with onnxruntime.

Observation layout (legged-gym / robot_lab convention, 45 floats):
  [0:3]   body angular velocity (body frame, rad/s) x 0.25
  [3:6]   gravity direction in the body frame (unit vector)
  [6:9]   command vx, vy (m/s), wz (rad/s), unscaled
  [9:21]  joint positions minus DEFAULT_POSE (rad), policy joint order
  [21:33] joint velocities (rad/s) x 0.05
  [33:45] the previous action (raw network output)
Targets are DEFAULT_POSE + action x ACTION_SCALE, tracked by the PD loop in world.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from spec_edge_cloud.sim import assets
from spec_edge_cloud.sim.robot import ACTION_SCALE, DEFAULT_POSE

ANGULAR_VELOCITY_SCALE = 0.25
JOINT_VELOCITY_SCALE = 0.05
OBSERVATION_CLIP = 100.0
N_OBSERVATIONS, N_ACTIONS = 45, 12


class WalkingPolicy:
    """The ONNX actor with its one piece of state: the previous action it observes."""

    def __init__(self, path: Path | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a 45x12 MLP: threads only add overhead
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path or assets.policy_onnx()), options,
                                             providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if inputs[0].shape[-1] != N_OBSERVATIONS or outputs[0].shape[-1] != N_ACTIONS:
            raise ValueError(f"policy {path} maps {inputs[0].shape} -> {outputs[0].shape}, "
                             f"expected {N_OBSERVATIONS} observations -> {N_ACTIONS} actions")
        self._input = inputs[0].name
        self._obs = np.zeros((1, N_OBSERVATIONS), dtype=np.float32)
        self.last_action = np.zeros(N_ACTIONS)

    def reset(self) -> None:
        self.last_action = np.zeros(N_ACTIONS)

    def targets(self, gyro: np.ndarray, gravity: np.ndarray, command: np.ndarray,
                joint_pos: np.ndarray, joint_vel: np.ndarray) -> np.ndarray:
        """Joint position targets (policy order) for one 50 Hz tick."""
        obs = self._obs[0]
        obs[0:3] = gyro * ANGULAR_VELOCITY_SCALE
        obs[3:6] = gravity
        obs[6:9] = command
        obs[9:21] = joint_pos - DEFAULT_POSE
        obs[21:33] = joint_vel * JOINT_VELOCITY_SCALE
        obs[33:45] = self.last_action
        np.clip(obs, -OBSERVATION_CLIP, OBSERVATION_CLIP, out=obs)
        (action,) = self._session.run(None, {self._input: self._obs})
        self.last_action = np.clip(action[0].astype(np.float64), -OBSERVATION_CLIP, OBSERVATION_CLIP)
        return DEFAULT_POSE + self.last_action * ACTION_SCALE
