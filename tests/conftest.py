"""Test-wide isolation: each run gets its own DDS domain on this host, and offscreen rendering."""
import os

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models on 2 shared cores: one OpenMP thread per process avoids barrier spinning that made a
# cached decoding step 5-10x slower under load (measured: 93 ms vs 11 ms per step for a tiny Llama).
os.environ.setdefault("OMP_NUM_THREADS", "1")
