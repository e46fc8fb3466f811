"""sim layer of spec_edge_cloud: the Go2 in a MuJoCo room (see docs/sim.md).

MuJoCo picks its OpenGL backend when it is first imported, so the CPU-only EGL backend (Mesa) is
chosen here, before any sim module imports mujoco; set MUJOCO_GL yourself to override it.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
