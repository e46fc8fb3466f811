"""The Go2 walking in the room: one object that owns the MuJoCo model, the policy and the PD loop.

Time advances in policy ticks of CONTROL_DT (50 Hz), each eight physics steps of PHYSICS_DT. Per
physics step the PD law turns joint targets into torques, clipped to the motors' limits and passed
through the fitted first-order torque lag. Everything a task needs to judge an episode (pose,
distance to the goal, falls, collisions) is read from here; rendering lives in camera.py.
"""
from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np

from spec_edge_cloud.sim import robot, scene
from spec_edge_cloud.sim.policy import WalkingPolicy
from spec_edge_cloud.sim.velocity import VelocityInterface

FALLEN_HEIGHT = 0.16        # trunk centre below this (m) means the robot is down
FALLEN_TILT_COS = 0.5       # body z axis more than 60 deg from vertical means the robot is down


class Go2World:
    """Physics, walking policy and velocity interface for one room, reset per episode."""

    def __init__(self, layout: scene.Layout | None = None, fitted: bool = True, trim: bool = True) -> None:
        """`fitted=False` (the MJCF's own physics) and `trim=False` (the policy without the
        velocity trim) exist to measure what each fix does (benchmarks/bench_sim.py --variants)."""
        self.model = scene.build_model(fitted)
        self.data = mujoco.MjData(self.model)
        self.policy = WalkingPolicy()
        self.velocity = VelocityInterface(trim)
        m = self.model
        # PD runs in MuJoCo's actuator order over contiguous slices (no gathers per physics step);
        # the policy's order is mapped once per tick through _to_mujoco / _to_policy.
        policy_joints = [m.joint(scene.ROBOT_PREFIX + name).id for name in robot.POLICY_JOINTS]
        actuator_joints = [int(m.actuator_trnid[a, 0]) for a in range(m.nu)]
        self._to_mujoco = np.array([policy_joints.index(j) for j in actuator_joints])
        self._to_policy = np.argsort(self._to_mujoco)
        q0, v0 = m.jnt_qposadr[actuator_joints[0]], m.jnt_dofadr[actuator_joints[0]]
        if (list(m.jnt_qposadr[actuator_joints]) != list(range(q0, q0 + m.nu))
                or list(m.jnt_dofadr[actuator_joints]) != list(range(v0, v0 + m.nu))):
            raise ValueError("the Go2 actuators must drive consecutive joints")
        self._joint_q = slice(q0, q0 + m.nu)
        self._joint_v = slice(v0, v0 + m.nu)
        self._torque_limit = m.actuator_ctrlrange[:, 1].copy()
        self.trunk = m.body(scene.ROBOT_PREFIX + robot.TRUNK).id
        free_joint = m.body_jntadr[self.trunk]
        self._base_q = m.jnt_qposadr[free_joint]
        self._base_v = m.jnt_dofadr[free_joint]
        self._feet = [m.geom(scene.ROBOT_PREFIX + leg).id for leg in robot.LEGS]
        self._floor = m.geom("floor").id
        self._robot_bodies = {b for b in range(m.nbody) if m.body(b).name.startswith(scene.ROBOT_PREFIX)}
        self._substeps = round(robot.CONTROL_DT / m.opt.timestep)
        # the torque lag is part of the fit: without it, torques apply at once
        self._lag = m.opt.timestep / (robot.TORQUE_LAG + m.opt.timestep) if fitted else 1.0
        self._torque = np.zeros(m.nu)
        self._buffer = np.zeros(m.nu)
        self.layout: scene.Layout | None = None
        self.reset(layout or scene.random_layout(0))

    # --- episode -------------------------------------------------------------------------------
    def reset(self, layout: scene.Layout) -> None:
        """Place the layout's objects and stand the robot at its start pose, feet on the floor."""
        m, d = self.model, self.data
        self.layout = layout
        scene.place_objects(m, layout)
        mujoco.mj_resetData(m, d)
        x, y, yaw = layout.start
        q = self._base_q
        d.qpos[q:q + 3] = [x, y, 0.5]
        d.qpos[q + 3:q + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        d.qpos[self._joint_q] = robot.DEFAULT_POSE[self._to_mujoco]
        mujoco.mj_forward(m, d)
        lowest = min(d.geom_xpos[g][2] for g in self._feet) - robot.FOOT_RADIUS
        d.qpos[q + 2] -= lowest
        mujoco.mj_forward(m, d)
        self._torque[:] = 0.0
        self.policy.reset()
        self.velocity.reset()

    @property
    def time(self) -> float:
        return float(self.data.time)

    # --- the velocity interface ----------------------------------------------------------------
    def set_velocity(self, vx: float, vy: float, vyaw: float) -> np.ndarray:
        """Command a body twist (m/s, m/s, rad/s), held for 1 s of sim time; returns it clamped."""
        return self.velocity.set(vx, vy, vyaw, self.time)

    def stop(self) -> None:
        self.velocity.stop()

    # --- stepping ------------------------------------------------------------------------------
    def tick(self) -> None:
        """One policy tick (CONTROL_DT of sim time)."""
        m, d = self.model, self.data
        v = self._base_v
        command = self.velocity.policy_command(self.time, self.twist(), robot.CONTROL_DT)
        targets = self.policy.targets(
            gyro=d.qvel[v + 3:v + 6],  # a free joint's angular velocity is in the body frame
            gravity=self._gravity_in_body(),
            command=command,
            joint_pos=d.qpos[self._joint_q][self._to_policy],
            joint_vel=d.qvel[self._joint_v][self._to_policy])[self._to_mujoco]
        q, qd, torque, applied = d.qpos[self._joint_q], d.qvel[self._joint_v], self._buffer, self._torque
        limit = self._torque_limit
        for _ in range(self._substeps):
            # torque = clip(KP (target - q) - KD qd), then the first-order lag; in place, as this
            # runs 400 times per simulated second
            np.subtract(targets, q, out=torque)
            torque *= robot.KP
            torque -= robot.KD * qd
            np.minimum(torque, limit, out=torque)
            np.maximum(torque, -limit, out=torque)
            torque -= applied
            torque *= self._lag
            applied += torque
            d.ctrl[:] = applied
            mujoco.mj_step(m, d)

    def advance(self, seconds: float) -> None:
        """Tick for `seconds` of sim time (rounded to whole ticks)."""
        for _ in range(max(0, round(seconds / robot.CONTROL_DT))):
            self.tick()

    # --- state ---------------------------------------------------------------------------------
    def pose(self) -> tuple[float, float, float]:
        """x, y (m) and yaw (rad, in (-pi, pi]) of the trunk in the world."""
        q = self._base_q
        w, x, y, z = self.data.qpos[q + 3:q + 7]
        yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        return float(self.data.qpos[q]), float(self.data.qpos[q + 1]), yaw

    def height(self) -> float:
        return float(self.data.qpos[self._base_q + 2])

    def twist(self) -> np.ndarray:
        """(vx, vy) in the heading frame and the yaw rate: what a velocity command means."""
        v = self._base_v
        _, _, yaw = self.pose()
        c, s = math.cos(yaw), math.sin(yaw)
        vx_w, vy_w = self.data.qvel[v], self.data.qvel[v + 1]
        rotation = self.data.xmat[self.trunk].reshape(3, 3)
        yaw_rate = float(rotation[2] @ self.data.qvel[v + 3:v + 6])
        return np.array([c * vx_w + s * vy_w, -s * vx_w + c * vy_w, yaw_rate])

    def odometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Trunk position (world, m), orientation (w, x, y, z), and linear (m/s) and angular
        (rad/s) velocity in the body frame: what nav_msgs/Odometry carries."""
        q, v = self._base_q, self._base_v
        rotation = self.data.xmat[self.trunk].reshape(3, 3)
        linear = rotation.T @ self.data.qvel[v:v + 3]
        return (self.data.qpos[q:q + 3].copy(), self.data.qpos[q + 3:q + 7].copy(), linear,
                self.data.qvel[v + 3:v + 6].copy())

    def _gravity_in_body(self) -> np.ndarray:
        return -self.data.xmat[self.trunk].reshape(3, 3)[2].copy()

    def fallen(self) -> bool:
        up = self.data.xmat[self.trunk].reshape(3, 3)[2, 2]
        return self.height() < FALLEN_HEIGHT or up < FALLEN_TILT_COS

    def collisions(self) -> list[str]:
        """Names of scene geoms (walls, objects) the robot touches now; the floor does not count."""
        m, d = self.model, self.data
        touched = set()
        for i in range(d.ncon):
            g1, g2 = d.contact[i].geom1, d.contact[i].geom2
            r1, r2 = m.geom_bodyid[g1] in self._robot_bodies, m.geom_bodyid[g2] in self._robot_bodies
            if r1 != r2:
                other = g2 if r1 else g1
                if other != self._floor:
                    touched.add(m.geom(other).name)
        return sorted(touched)

    def set_goal(self, index: int) -> None:
        """Make object `index` of the room the goal, the robot and every object where they are: the
        same scene under another instruction (nothing physical depends on which object is the goal)."""
        assert self.layout is not None
        if not 0 <= index < len(self.layout.objects):
            raise ValueError(f"no object {index} in a room of {len(self.layout.objects)}")
        self.layout = dataclasses.replace(self.layout, goal=index)

    def goal_distance(self) -> float:
        """Horizontal distance from the trunk centre to the goal object's centre."""
        assert self.layout is not None
        goal = self.layout.goal_object
        x, y, _ = self.pose()
        return math.hypot(goal.x - x, goal.y - y)
