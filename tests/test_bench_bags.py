"""Camera + instruction bags: writer/reader, the shipped bag, sim recording, and the live ROS recorder."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spec_edge_cloud.bench.bags import BagError, BagWriter, read_frames
from spec_edge_cloud.sim.vocab import parse_instruction
from processes import stop

SHIPPED = "data/bags/sim_small"
EPISODE = "data/bags/sim_episode"   # one closed-loop episode


def image(seed, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size + 8, 3), dtype=np.uint8)


def test_frames_come_back_with_their_stamps_and_the_instruction_in_force(tmp_path):
    with BagWriter(tmp_path / "b") as bag:
        bag.image(5, image(0))                      # before any instruction: no task, skipped
        bag.instruction(10, "go to the red ball")
        bag.image(20, image(1), log_ns=25)
        bag.instruction(30, "go to the blue box")
        bag.image(40, image(2))
    frames = read_frames(tmp_path / "b")
    assert [(f.stamp_ns, f.instruction) for f in frames] == [(20, "go to the red ball"), (40, "go to the blue box")]
    np.testing.assert_array_equal(frames[0].image, image(1))
    assert frames[1].image.shape == (32, 40, 3)
    assert len(read_frames(tmp_path / "b", limit=1)) == 1


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    with BagWriter(tmp_path / "b") as bag:
        with pytest.raises(BagError, match="HxWx3 uint8"):
            bag.image(1, np.zeros((4, 4), np.uint8))
        with pytest.raises(BagError, match="empty instruction"):
            bag.instruction(1, "  ")
        bag.image(2, image(3))
    with pytest.raises(BagError, match="never overwritten"):
        BagWriter(tmp_path / "b")
    with pytest.raises(BagError, match="no /camera/image_raw frame after"):
        read_frames(tmp_path / "b")                 # only a frame with no instruction before it
    with pytest.raises(BagError, match="not a rosbag2 directory"):
        read_frames(tmp_path / "nothing")


def test_shipped_bag_holds_sim_episodes():
    frames = read_frames(SHIPPED)
    assert len(frames) >= 8
    assert len({f.instruction for f in frames}) >= 3
    for f in frames:
        parse_instruction(f.instruction)
        assert f.image.shape == (128, 128, 3)
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    size = sum(p.stat().st_size for p in Path(SHIPPED).iterdir())
    assert size < 2_000_000


def test_shipped_episode_bag_is_one_episode_in_order():
    """The closed-loop episode: one instruction, frames a second apart, so answers repeat as on a robot."""
    frames = read_frames(EPISODE)
    assert len(frames) >= 8 and len({f.instruction for f in frames}) == 1
    parse_instruction(frames[0].instruction)
    gaps = {round((b.stamp_ns - a.stamp_ns) / 1e9, 3) for a, b in zip(frames, frames[1:])}
    assert gaps == {1.0}
    assert all(f.image.shape == (128, 128, 3) for f in frames)
    assert sum(p.stat().st_size for p in Path(EPISODE).iterdir()) < 1_000_000


def test_sim_record_writes_episodes_to_a_bag(tmp_path):
    out = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "sim", "record", "--episodes", "2",
                          "--frames", "2", "--every", "0.5", "--image-size", "64", "--out", str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    frames = read_frames(tmp_path / "s")
    assert 2 <= len(frames) <= 4 and frames[0].image.shape == (64, 64, 3)
    parse_instruction(frames[0].instruction)
    assert frames[0].image.std() > 5, "a blank render"
    again = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "sim", "record", "--episodes", "1",
                            "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "never overwritten" in again.stdout + again.stderr


PUBLISHER = """
import sys, time, numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
rclpy.init()
n = rclpy.create_node('bag_test_publisher')
latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
n.create_publisher(String, '/instruction', latched).publish(String(data='go to the green cone'))
pub = n.create_publisher(Image, '/camera/image_raw', qos_profile_sensor_data)
for i in range(400):
    img = np.full((24, 32, 3), i % 256, np.uint8); img[..., 0] = 7
    m = Image(height=24, width=32, encoding='bgr8' if i % 2 else 'rgb8', step=96, data=img.tobytes())
    m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id = 100 + i, 5, 'head_camera'
    pub.publish(m)
    rclpy.spin_once(n, timeout_sec=0.05)
"""


def test_ros_recorder_writes_live_topics(tmp_path):
    pytest.importorskip("rclpy")
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER])
    try:
        out = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "record", "--out", str(tmp_path / "r"),
                              "--frames", "10", "--duration", "60"], capture_output=True, text=True, timeout=120)
    finally:
        stop(pub)
    assert out.returncode == 0, out.stderr
    frames = read_frames(tmp_path / "r")
    assert frames and all(f.instruction == "go to the green cone" for f in frames)
    for f in frames:
        i = f.stamp_ns // 1_000_000_000 - 100
        assert f.stamp_ns % 1_000_000_000 == 5 and f.image.shape == (24, 32, 3)
        # the publisher's first channel holds 7: red as rgb8 (kept), blue as bgr8 (converted to RGB)
        assert (f.image[..., 0 if i % 2 == 0 else 2] == 7).all()
