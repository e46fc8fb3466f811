"""The camera node in its own processes over real DDS, one per source: a rosbag2 (MCAP written with
rosbags), a video file (OpenCV), a ROS image topic (bgr8 in, rgb8 out) and the Go2 front camera (a
stand-in video service on loopback DDS answering with a JPEG). Each publishes resized rgb8 images
and JPEGs with a CameraInfo beside each image, stamped at capture, under the namespace it is
given (topic names are relative)."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
import cv2  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from spec_edge_cloud.ros import images  # noqa: E402
from processes import stop  # noqa: E402

HERE = Path(__file__).resolve().parent
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]   # RGB, one per bag/video frame
SOURCES = ("bag", "video", "topic", "go2")


def solid(rgb, w=64, h=48):
    return np.full((h, w, 3), rgb, dtype=np.uint8)


def write_bag(path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    Img, Header, Time = (ts.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                               "builtin_interfaces/msg/Time"))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam", Img.__msgtype__, typestore=ts)
        for i, c in enumerate(COLOURS):
            msg = Img(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=48, width=64,
                      encoding="rgb8", is_bigendian=0, step=64 * 3, data=solid(c).reshape(-1))
            w.write(conn, (i + 1) * 10**8, ts.serialize_cdr(msg, Img.__msgtype__))


def write_video(path: Path) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for c in COLOURS:
        w.write(cv2.cvtColor(solid(c), cv2.COLOR_RGB2BGR))
    w.release()


def camera(namespace: str, *remaps: str, **params) -> subprocess.Popen:
    args = [sys.executable, "-m", "spec_edge_cloud.ros.camera_node", "--ros-args", "-r", f"__ns:={namespace}",
            "-p", "rate_hz:=10.0"]
    for r in remaps:
        args += ["-r", r]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args)


def close_to(image, rgb, tol=25):
    return np.all(np.abs(image.reshape(-1, 3).mean(0) - np.array(rgb)) < tol)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """All four camera nodes at once; collect ~4 s of what they publish."""
    tmp = tmp_path_factory.mktemp("camera")
    write_bag(tmp / "bag")
    write_video(tmp / "clip.avi")
    jpeg = images.jpeg_from_rgb(solid((250, 200, 0), 80, 60))
    (tmp / "go2.jpg").write_bytes(jpeg)
    import os
    go2_domain = (int(os.environ["ROS_DOMAIN_ID"]) + 100) % 230
    standin = subprocess.Popen([sys.executable, str(HERE / "go2_video_standin.py"), str(go2_domain),
                                str(tmp / "go2.jpg")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert standin.stdout.readline().strip() == "ready"
    procs = [camera("/t/bag", source="bag", bag_path=str(tmp / "bag"), bag_topic="/cam", width=32, height=24),
             camera("/t/video", source="opencv", device=str(tmp / "clip.avi"), width=32, height=24),
             camera("/t/topic", "image:=/t/in", source="topic", width=40, height=30),
             camera("/t/go2", source="go2", go2_interface="lo", go2_domain_id=go2_domain, width=0, height=0,
                    horizontal_fov_deg=90.0)]
    rclpy.init()
    node = rclpy.create_node("camera_test")
    got = {s: {"raw": [], "jpeg": [], "info": []} for s in SOURCES}
    for s in SOURCES:
        node.create_subscription(Image, f"/t/{s}/camera/image_raw",
                                 lambda m, s=s: got[s]["raw"].append((time.time(), m)), qos_profile_sensor_data)
        node.create_subscription(CompressedImage, f"/t/{s}/camera/image_raw/compressed",
                                 lambda m, s=s: got[s]["jpeg"].append(m), qos_profile_sensor_data)
        node.create_subscription(CameraInfo, f"/t/{s}/camera/camera_info",
                                 lambda m, s=s: got[s]["info"].append(m), qos_profile_sensor_data)
    src = node.create_publisher(Image, "/t/in", qos_profile_sensor_data)
    sent = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(len(got[s]["raw"]) >= 8 and got[s]["jpeg"] for s in SOURCES):
            t = time.time() - 0.25  # an input captured a moment ago: the node must keep this stamp
            bgr = cv2.cvtColor(solid(COLOURS[len(sent) % 3], 80, 60), cv2.COLOR_RGB2BGR)
            msg = Image(height=60, width=80, encoding="bgr8", step=240, data=bgr.tobytes())
            msg.header.stamp = images.stamp(t)
            src.publish(msg)
            sent.append(t)
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.02)
        yield got, sent, jpeg
    finally:
        stop(*procs)
        standin.stdin.close()
        standin.wait(10)
        node.destroy_node()
        rclpy.shutdown()


def test_bag_frames_come_resized_in_order_stamped_at_replay(run):
    got, _, _ = run
    raw = got["bag"]["raw"]
    assert len(raw) >= 8
    for received, m in raw:
        assert (m.width, m.height, m.encoding) == (32, 24, "rgb8")
        assert abs(received - images.seconds(m.header.stamp)) < 1.0   # replay time, not the bag's stamp
    seq = [next(i for i, c in enumerate(COLOURS) if close_to(images.rgb_from_image(m), c)) for _, m in raw]
    assert all((b - a) % 3 == 1 for a, b in zip(seq, seq[1:])), seq   # looped, in recorded order
    jpeg = images.rgb_from_jpeg(got["bag"]["jpeg"][0].data)
    assert jpeg.shape == (24, 32, 3) and any(close_to(jpeg, c) for c in COLOURS)


def test_video_file_frames_loop(run):
    got, _, _ = run
    raw = [images.rgb_from_image(m) for _, m in got["video"]["raw"]]
    assert len(raw) >= 8 and raw[0].shape == (24, 32, 3)
    assert {next(i for i, c in enumerate(COLOURS) if close_to(r, c, 40)) for r in raw} == {0, 1, 2}


def test_topic_source_converts_bgr_to_rgb_resizes_and_keeps_the_capture_stamp(run):
    got, sent, _ = run
    raw = got["topic"]["raw"]
    assert raw
    for _, m in raw:
        t = images.seconds(m.header.stamp)
        i = min(range(len(sent)), key=lambda k: abs(sent[k] - t))
        assert abs(sent[i] - t) < 1e-6, "the input's capture stamp must be kept"
        assert (m.width, m.height) == (40, 30)
        assert close_to(images.rgb_from_image(m), COLOURS[i % 3])   # red stays red: channels swapped right


def test_go2_jpeg_is_published_unchanged_and_decoded(run):
    got, _, jpeg = run
    assert bytes(got["go2"]["jpeg"][0].data) == jpeg and got["go2"]["jpeg"][0].format == "jpeg"
    _, m = got["go2"]["raw"][0]
    assert (m.width, m.height) == (80, 60) and close_to(images.rgb_from_image(m), (250, 200, 0))


def test_each_image_has_its_camera_info_in_the_one_camera_frame(run):
    got, _, _ = run
    for s in SOURCES:
        stamps = {images.seconds(i.header.stamp): i for i in got[s]["info"]}
        pairs = [(m, stamps[images.seconds(m.header.stamp)]) for _, m in got[s]["raw"]
                 if images.seconds(m.header.stamp) in stamps]
        assert len(pairs) >= len(got[s]["raw"]) // 2, f"{s}: images without their CameraInfo (best effort QoS)"
        for m, info in pairs:
            assert (info.width, info.height) == (m.width, m.height)
            assert m.header.frame_id == info.header.frame_id == images.CAMERA_FRAME
    calibrated, uncalibrated = got["go2"]["info"][0], got["bag"]["info"][0]
    assert calibrated.k[0] == pytest.approx(40.0) and calibrated.k[2] == pytest.approx(39.5)   # 80 px, 90 deg
    assert not any(uncalibrated.k)   # no field of view given: uncalibrated, as CameraInfo defines it


def test_bad_parameters_end_the_node_with_one_fatal_line_and_code_2(tmp_path):
    for params, message in ((["-p", "source:=webcam"], "parameter source must be one of"),
                            (["-p", "rate_hz:=0.0"], "rate_hz"),
                            (["-p", "width:=wide"], "width"),
                            (["-p", "source:=bag", "-p", f"bag_path:={tmp_path / 'none'}"], "not found")):
        p = subprocess.run([sys.executable, "-m", "spec_edge_cloud.ros.camera_node", "--ros-args", *params],
                           capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        fatal = [x for x in out.splitlines() if "[FATAL]" in x]
        assert p.returncode == 2 and len(fatal) == 1 and message in fatal[0], out[-800:]
        assert "Traceback" not in out, out[-800:]


def test_image_conversions_refuse_bad_input():
    with pytest.raises(ValueError, match="encoding"):
        images.rgb_from_raw("yuv422", 2, 2, 4, bytes(8))
    with pytest.raises(ValueError, match="needs"):
        images.rgb_from_raw("rgb8", 10, 10, 30, bytes(20))
    with pytest.raises(ValueError, match="could not be decoded"):
        images.rgb_from_jpeg(b"not a jpeg")
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 0] = 255   # blue in BGRA
    assert images.rgb_from_raw("bgra8", 2, 3, 12, bgra.tobytes())[0, 0].tolist() == [0, 0, 255]


def test_ros2_param_set_is_refused_on_start_up_parameters(tmp_path):
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    write_video(tmp_path / "clip.avi")
    proc = camera("/t/params", source="opencv", device=str(tmp_path / "clip.avi"))
    context = Context()   # its own: the module's fixture may still hold the default one
    rclpy.init(context=context)
    node = rclpy.create_node("camera_params_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        client = AsyncParameterClient(node, "/t/params/camera_node")
        assert client.wait_for_services(60.0)

        def set_one(name, value):
            future = client.set_parameters([Parameter(name, value=value)])
            executor.spin_until_future_complete(future, timeout_sec=20.0)
            return future.result().results[0]
        refused = set_one("source", "bag")
        assert not refused.successful and "read-only" in refused.reason
        assert not set_one("jpeg_quality", 101).successful   # out of its range
        assert set_one("jpeg_quality", 50).successful         # the one runtime parameter
        future = client.describe_parameters(["rate_hz"])
        executor.spin_until_future_complete(future, timeout_sec=20.0)
        (rate,) = future.result().descriptors
        assert rate.read_only and rate.description and rate.floating_point_range[0].from_value == 0.1
    finally:
        stop(proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
