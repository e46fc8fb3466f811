"""The robot pipeline in separate processes over real DDS, started by `spec-edge-cloud up`: the MuJoCo
sim's camera image goes to the draft node (a real VLM pair, verified in-process), its token events to
the command node, and final actions come back to the sim as Twists on /cmd_vel, which move the robot.
Provisional words (from exit heads that are wrong on purpose) are rolled back and never move it.
Then Ctrl-C stops every process cleanly; and `up` exits non-zero when one of its nodes dies."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_models import INSTRUCTION, make_pair  # noqa: E402
from spec_edge_cloud.control.parser import ActionReady, IncrementalParser  # noqa: E402
from spec_edge_cloud.ros import images  # noqa: E402
from spec_edge_cloud.ros.command_node import TOKENS_QOS  # noqa: E402
from spec_edge_cloud.ros.launcher import LaunchConfigError, load_up_config  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config"


def start_up(config: Path) -> tuple[subprocess.Popen, list[str]]:
    """`spec-edge-cloud up CONFIG` in its own session (so the test can Ctrl-C it), output collected."""
    proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.cli", "up", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    import threading
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    return proc, lines


def child_pids(lines: list[str]) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for x in list(lines) if (m := re.match(r"up: started (\S+) \(pid (\d+)\)", x))}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def write_config(path: Path, processes: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"description": "test", "processes": processes}, sort_keys=False))
    return path


class Recorder:
    def __init__(self):
        rclpy.init()
        self.node = rclpy.create_node("pipeline_test")
        self.stamps, self.events, self.records, self.twists, self.odom = [], [], [], [], []
        self.metrics: dict[str, dict] = {}
        n = self.node
        n.create_subscription(DiagnosticArray, "/spec/metrics", self._on_metrics, 10)
        n.create_subscription(Image, "/camera/image_raw", lambda m: self.stamps.append(images.seconds(m.header.stamp)),
                              qos_profile_sensor_data)
        n.create_subscription(String, "/spec/tokens", lambda m: self.events.append(json.loads(m.data)), TOKENS_QOS)
        n.create_subscription(String, "/spec/actions", lambda m: self.records.append(json.loads(m.data)), 100)
        n.create_subscription(Twist, "/cmd_vel", lambda m: self.twists.append(
            (time.time(), m.linear.x, m.linear.y, m.angular.z)), 100)
        n.create_subscription(Odometry, "/odom", lambda m: self.odom.append(
            (m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.orientation.z, m.pose.pose.orientation.w)), 10)

    def _on_metrics(self, msg):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.metrics[values["response"]] = {k: json.loads(v) if k not in ("response", "mode", "instruction", "text")
                                                else v for k, v in values.items()}

    def spin_until(self, cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return cond()

    def ended(self) -> list[str]:
        return [e["response"] for e in self.events if e["kind"] == "end" and e["capture_t"] is not None]

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    target, draft = make_pair(tmp)
    config = write_config(tmp / "up.yaml", [
        {"name": "sim", "executable": "sim_node", "params_file": str(CONFIG / "sim.yaml"),
         "parameters": {"seed": 3, "instruction": INSTRUCTION, "publish_instruction": True}},
        {"name": "command", "executable": "command_node", "params_file": str(CONFIG / "robot.yaml")},
        {"name": "draft", "executable": "draft_node", "params_file": str(CONFIG / "robot.yaml"),
         "parameters": {"draft_model": str(draft), "inprocess_target": str(target), "exit_threshold": 0.0,
                        "inprocess_rtt_ms": 20.0, "replan_period_s": 1.0}}])
    rec = Recorder()
    up, lines = start_up(config)
    try:
        ok = rec.spin_until(lambda: len(rec.ended()) >= 2 and any(abs(t[3]) > 0.05 for t in rec.twists), 150)
        assert ok, "no answer moved the robot within 150 s:\n" + "".join(lines[-40:])
        rec.spin_until(lambda: False, 1.0)   # the command node's records of the last answer
        yield rec, up, lines
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(30)
        rec.close()


def final_words(events, response):
    words = {}
    for e in events:
        if e["response"] == response and e["kind"] == "final":
            words.update({e["index"] + i: w for i, w in enumerate(e["words"])})
    return [words[i] for i in range(len(words))]


def test_a_sim_image_becomes_a_twist_that_moves_the_robot(pipeline):
    rec, _, _ = pipeline
    first = next(e for e in rec.events if e["kind"] == "start" and e["capture_t"] is not None)
    assert any(abs(s - first["capture_t"]) < 1e-6 for s in rec.stamps), "the answer was not made from a sim frame"
    action = next(r for r in rec.records if r["kind"] == "action")
    moving = [t for t in rec.twists if abs(t[1]) + abs(t[3]) > 0.05]
    assert moving and moving[0][0] >= action["t"] - 0.05   # motion follows the first parsed action
    (x0, y0, z0, w0), (x1, y1, z1, w1) = rec.odom[0], rec.odom[-1]
    turned = abs(2 * math.atan2(z1, w1) - 2 * math.atan2(z0, w0))
    assert math.hypot(x1 - x0, y1 - y0) > 0.1 or turned > 0.1, "the simulated robot did not move"


def test_only_final_words_become_actions_and_provisional_ones_are_rolled_back(pipeline):
    rec, _, _ = pipeline
    finals = {e["response"]: e for e in rec.events if e["kind"] == "final"}
    rolled_back = 0
    for rid in rec.ended():
        words = final_words(rec.events, rid)
        parser = IncrementalParser()
        expected = [str(ev.action) for w in words for ev in parser.feed(w) if isinstance(ev, ActionReady)]
        got = [r["action"] for r in rec.records if r["response"] == rid and r["kind"] == "action"]
        assert got == expected, f"{rid}: actions {got} are not those of the final words {words}"
        final_ts = {e["t"] for e in rec.events if e["response"] == rid and e["kind"] == "final"}
        assert all(r["token_t"] in final_ts for r in rec.records if r["response"] == rid), \
            "an action was triggered by something other than a final event"
        for e in rec.events:
            if e["response"] == rid and e["kind"] == "provisional" and \
                    e["words"] != words[e["index"]: e["index"] + len(e["words"])]:
                rolled_back += 1
    assert rolled_back > 0 and any(e["kind"] == "rollback" for e in rec.events), \
        "the wrong exit heads should have produced provisional words that were rolled back"
    assert finals, "no final words at all"
    # the final plans only turn left and walk forward: a leaked provisional word could only add other motion
    assert all(vx >= -1e-6 and vy == 0 and vyaw >= -1e-6 for _, vx, vy, vyaw in rec.twists)


def test_metrics_describe_each_answer(pipeline):
    rec, _, _ = pipeline
    for rid in rec.ended():
        m, words = rec.metrics[rid], final_words(rec.events, rid)
        assert m["mode"] == "spec-ee-pre" and m["instruction"] == INSTRUCTION
        assert m["text"].split() == [w for w in words if w]
        assert m["tokens"] == len(words) and m["rounds"] >= 1 and 0 <= m["acceptance"] <= 1
        assert m["predrafts"] >= 1 and m["hit_rate"] < 1, "the wrong exit heads should make pre-drafts miss"
        assert m["latency_s"] >= m["ttc_s"] > 0 and m["unverified_from"] is None
        assert m["bytes_up"] is None   # in process: no wire to count


def test_ctrl_c_stops_every_node_cleanly(pipeline):
    _, up, lines = pipeline
    pids = child_pids(lines)
    assert set(pids) == {"sim", "command", "draft"} and all(alive(p) for p in pids.values())
    os.killpg(up.pid, signal.SIGINT)
    assert up.wait(30) == 0, "".join(lines[-30:])
    assert not any(alive(p) for p in pids.values())
    assert any("up: stopped: sim=0, command=0, draft=0" in x for x in lines), "".join(lines[-10:])


def test_up_exits_non_zero_when_a_node_dies(tmp_path):
    import cv2
    import numpy as np
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    w.write(np.zeros((24, 32, 3), np.uint8))
    w.release()
    config = write_config(tmp_path / "up.yaml", [
        {"name": "command", "executable": "command_node", "params_file": str(CONFIG / "robot.yaml")},
        {"name": "camera", "executable": "camera_node", "parameters": {"device": str(video), "rate_hz": 5.0}}])
    up, lines = start_up(config)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("camera node: source" in x for x in lines):
            time.sleep(0.1)
        pids = child_pids(lines)
        os.kill(pids["command"], signal.SIGKILL)
        assert up.wait(30) == 1
        assert any("command exited with code -9" in x for x in lines), "".join(lines)
        assert not alive(pids["camera"])
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)


def test_up_config_errors_are_clear(tmp_path):
    def load(processes, **kw):
        return load_up_config(write_config(tmp_path / "c.yaml", processes), **kw)
    with pytest.raises(LaunchConfigError, match="not an executable of spec_edge_cloud"):
        load([{"name": "a", "executable": "rm"}])
    with pytest.raises(LaunchConfigError, match="unknown variable"):
        load([{"name": "a", "executable": "command_node", "parameters": {"rate_hz": "{rate}"}}])
    with pytest.raises(LaunchConfigError, match="not a ROS node"):
        load([{"name": "a", "executable": "spec-edge-cloud", "parameters": {"x": 1}}])
    with pytest.raises(LaunchConfigError, match="params_file .* not found"):
        load([{"name": "a", "executable": "command_node", "params_file": "nope.yaml"}])
    with pytest.raises(LaunchConfigError, match="duplicate process name"):
        load([{"name": "a", "executable": "command_node"}, {"name": "a", "executable": "sim_node"}])
    with pytest.raises(LaunchConfigError, match="no variable 'port'"):
        load([{"name": "a", "executable": "command_node"}], overrides={"port": 1})
    params = {"rate_hz": "{rate}", "device": "{dev}", "frame_id": "cam{dev}"}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"vars": {"rate": 20.0, "dev": "0"}, "processes": [
        {"name": "a", "executable": "camera_node", "parameters": params}]}, sort_keys=False))
    argv = load_up_config(tmp_path / "v.yaml", {"rate": 5.0}).processes[0].argv
    # a whole "{var}" keeps its type; JSON keeps "0" a string for rcl's YAML reader
    assert argv[-6:] == ("-p", "rate_hz:=5.0", "-p", 'device:="0"', "-p", 'frame_id:="cam0"')
