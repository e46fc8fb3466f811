"""ROS draft node (robot): instruction + freshest camera frame -> one VLM response -> token events.

On each new /instruction, and every `replan_period_s` after a response while the task runs, the
node takes the freshest frame, decodes one answer in the configured mode through the link to the
cloud (ZeroMQ `endpoint`, or an `inprocess_target` verified in this process), and streams what it
learns as token events (control/token_events.py) on /spec/tokens:

    start        when the response begins (the command node drops the previous plan: the robot
                 waits for an answer made from this frame, not a stale one)
    provisional  words an early exit proposed (never move the robot)
    rollback     the final verdict disagreed with the provisional words
    final        words the target's final layer committed (these move the robot)
    unverified   words the robot decoded alone after the cloud missed `deadline_s`
    end          the response is complete

While a task runs, a std_msgs/Header on spec/heartbeat every HEARTBEAT_PERIOD_S says the node is
alive: the command node stops a plan whose producer went silent (a killed or hung draft node).

Each event carries capture_t, the frame's stamp, so latency is measured from the camera. After each
response a DiagnosticArray on /spec/metrics reports latency, acceptance, hit rate and bytes; once a
second /diagnostics says whether the cloud link is up, the mode, and the task.

The task ends when the model says the goal is reached (an observation ending in "reached") in
`reached_confirmations` answers in a row (one look can mistake a far goal for a near one), on an
empty /instruction, or after `task_timeout_s`; the node then sends an empty response, which stops
the robot. Parameters (PARAMETERS below, config/robot.yaml) can be changed while it runs
(`ros2 param set /draft_node mode cloud`); they apply from the next response.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from spec_edge_cloud.control.parser import IncrementalParser, Observation
from spec_edge_cloud.control.token_events import TokenEvent
from spec_edge_cloud.decoding.modes import MODES

from . import images
from .command_node import HEARTBEAT_PERIOD_S, HEARTBEAT_QOS, TOKENS_QOS
from .qos import INSTRUCTION_QOS
from .robot_decoder import open_robot_decoder
from .spin import run_node

# Every parameter of the node, with its default (mirrored in config/robot.yaml, draft_node).
PARAMETERS = {
    "draft_model": "models/draft",   # the draft VLM's directory
    "mode": "spec-ee-pre",           # edge | cloud | spec | spec-ee | spec-ee-pre | adaptive
    "gamma": 4,                      # draft length
    "exit_threshold": 0.5,           # early verdicts below this confidence are not sent
    "max_new_tokens": 48,
    "temperature": 0.0,              # 0: greedy (the target's own answer, token for token)
    "seed": 0,
    "deadline_s": 10.0,              # no word from the cloud for this long: finish on the robot, unverified
    "endpoint": "",                  # tcp://host:port of the verifier (or of a link emulator before it)
    "server_public_key": "",         # CurveZMQ (required off this host): the verifier's NAME.key
    "client_secret_key": "",         # CurveZMQ: this robot's NAME.key_secret
    "insecure": False,               # allow plaintext to an endpoint off this host
    "expect_model": "",              # refuse a cloud serving another target (its model fingerprint)
    "inprocess_target": "",          # a target model directory verified in this process (no endpoint)
    "inprocess_rtt_ms": 0.0,         # round trip added to the in-process link
    "target_profile": "",            # timing emulation of the in-process target (a profile name or file)
    "draft_profile": "",             # timing emulation of the draft, e.g. go2
    "replan_period_s": 2.0,          # wait after a response before the next one, while the task runs
    "task_timeout_s": 120.0,         # stop replanning after this long on one instruction
    "reached_confirmations": 2,      # answers in a row saying "reached" that end the task (1: the first does)
    "max_frame_age_s": 1.0,          # wait for a newer frame than this
    "image_topic": "/camera/image_raw",
}
RUNTIME = ("mode", "gamma", "exit_threshold", "max_new_tokens", "temperature", "seed", "deadline_s",
           "replan_period_s", "task_timeout_s", "reached_confirmations", "max_frame_age_s")


class Cancelled(Exception):
    """The task changed while a response was being decoded."""


@dataclass
class Task:
    instruction: str
    number: int
    started: float
    reached: int = 0  # answers in a row that said the goal is reached

    def answered(self, reached: bool, confirmations: int) -> bool:
        """Count one answer; True once `confirmations` answers in a row said the goal is reached.

        One look can be wrong (the tiny default target sometimes takes a far goal for a near one),
        so by default the task ends on a second "reached" from a fresh frame."""
        self.reached = self.reached + 1 if reached else 0
        return self.reached >= confirmations


def observation_reached(words: list[str]) -> bool:
    """True when the answer's observation says the goal is reached ("red ball reached .")."""
    parser = IncrementalParser()
    for w in words:
        for event in parser.feed(w):
            if isinstance(event, Observation):
                return event.text.split()[-1:] == ["reached"]
    return False


class DraftNode(Node):
    def __init__(self) -> None:
        super().__init__("draft_node")
        p = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        self._check(p)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.decoder = open_robot_decoder(p)
        self.tokens_pub = self.create_publisher(String, "/spec/tokens", TOKENS_QOS)
        self.metrics_pub = self.create_publisher(DiagnosticArray, "/spec/metrics", 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.heartbeat_pub = self.create_publisher(Header, "spec/heartbeat", HEARTBEAT_QOS)
        self.create_timer(HEARTBEAT_PERIOD_S, self._heartbeat)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_subscription(String, "/instruction", self._on_instruction, INSTRUCTION_QOS)
        self.create_subscription(Image, p["image_topic"], self._on_image, qos_profile_sensor_data)
        self._cv = threading.Condition()
        self._task: Task | None = None
        self._tasks = 0
        self._frame: tuple[Image, float] | None = None   # latest message, its receipt time (monotonic)
        self._due = 0.0
        self._halt_reason: str | None = None   # set: stop the robot with an empty response
        self._closing = False
        self._prefix = uuid.uuid4().hex[:6]
        self._responses = 0
        self._worker = threading.Thread(target=self._work, name="draft-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"draft node: mode {p['mode']}, {self.decoder.description}")

    # -- parameters ------------------------------------------------------------------------------
    @staticmethod
    def _check(p: dict) -> None:
        if p["mode"] not in MODES:
            raise ValueError(f"parameter mode must be one of {MODES}, got {p['mode']!r}")
        for name in ("gamma", "max_new_tokens", "reached_confirmations"):
            if p[name] <= 0:
                raise ValueError(f"parameter {name} must be positive, got {p[name]}")
        for name in ("deadline_s", "task_timeout_s", "max_frame_age_s"):
            if not p[name] > 0:
                raise ValueError(f"parameter {name} must be positive, got {p[name]}")
        if p["replan_period_s"] < 0 or p["temperature"] < 0:
            raise ValueError("parameters replan_period_s and temperature must be >= 0")

    def _on_set_parameters(self, params) -> SetParametersResult:
        current = self._runtime()
        for param in params:
            if param.name not in RUNTIME:
                return SetParametersResult(successful=False, reason=f"{param.name} is fixed at start-up")
            current[param.name] = param.value
        try:
            self._check(current)
        except ValueError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _runtime(self) -> dict:
        return {name: self.get_parameter(name).value for name in RUNTIME}

    # -- inputs ----------------------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        with self._cv:
            if text:
                self._tasks += 1
                self._task = Task(text, self._tasks, time.monotonic())
                self._due = 0.0
                self.get_logger().info(f"task {self._tasks}: {text!r}")
            elif self._task is not None:
                self._task = None
                self._halt_reason = "task cancelled (empty instruction)"
            self._cv.notify_all()

    def _on_image(self, msg: Image) -> None:
        with self._cv:
            self._frame = (msg, time.monotonic())
            self._cv.notify_all()

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cv:
                while not (self._closing or self._halt_reason or self._ready()):
                    self._cv.wait(0.05)
                    if self._task is not None and self._expired(self._task):  # e.g. no frames arrive
                        self._halt_reason = f"task {self._task.number} timed out"
                        self._task = None
                if self._closing:
                    return
                reason, self._halt_reason = self._halt_reason, None
                task, frame = self._task, self._frame
            if reason:
                self._halt(reason)
                continue
            failed = False
            try:
                reached = self._respond(task, frame)
            except Cancelled:
                self.decoder.cancel()
                continue
            except Exception as e:  # a broken link or model: report it, stop the robot, wait for a new task
                self.get_logger().error(f"response failed: {type(e).__name__}: {e}")
                self.decoder.cancel()
                reached, failed = False, True
            with self._cv:
                if self._task is not task:
                    continue  # replaced or cancelled meanwhile
                self._due = time.monotonic() + self.get_parameter("replan_period_s").value
                finished = task.answered(reached, self.get_parameter("reached_confirmations").value) or failed
                timed_out = self._expired(task)
                if finished or timed_out:
                    self._task = None
                    self._halt_reason = f"task {task.number} {'timed out' if timed_out else 'done'}"

    def _expired(self, task: Task) -> bool:
        return time.monotonic() - task.started > self.get_parameter("task_timeout_s").value

    def _ready(self) -> bool:
        """A task is running, its next response is due, and a fresh enough frame is there."""
        if self._task is None or time.monotonic() < self._due or self._frame is None:
            return False
        return time.monotonic() - self._frame[1] <= self.get_parameter("max_frame_age_s").value

    def _respond(self, task: Task, frame: tuple[Image, float]) -> bool:
        """One response on this frame; True when the model says the task is done."""
        msg, _ = frame
        capture_t = images.seconds(msg.header.stamp)
        image = images.rgb_from_image(msg)
        self._responses += 1
        rid = f"{self._prefix}-{self._responses}"
        settings = self._runtime()
        final_words: list[str] = []

        def emit(kind: str, index: int, tokens: list[int]) -> None:
            if self._task is not task:
                raise Cancelled()
            words = self.decoder.words(tokens)
            if kind in ("final", "unverified"):
                final_words.extend(words)
            self._publish(TokenEvent(rid, kind, index, tuple(tokens), tuple(words), time.time(), capture_t))

        self._publish(TokenEvent(rid, "start", 0, (), (), time.time(), capture_t))
        response = self.decoder.generate(task.instruction, image, settings, emit)
        self._publish(TokenEvent(rid, "end", len(response.tokens), (), (), time.time(), capture_t))
        self._publish_metrics(rid, task, settings, response, capture_t)
        self.get_logger().info(f"{rid} ({settings['mode']}): {response.text!r}")
        return observation_reached(final_words)

    def _halt(self, reason: str) -> None:
        """An empty response: the command node drops its plan and the robot stops."""
        self._responses += 1
        rid = f"{self._prefix}-{self._responses}"
        now = time.time()
        self._publish(TokenEvent(rid, "start", 0, (), (), now, None))
        self._publish(TokenEvent(rid, "end", 0, (), (), now, None))
        self.get_logger().info(f"{rid}: robot stopped ({reason})")

    def _heartbeat(self) -> None:
        """Alive while a task runs and the worker that decodes for it is."""
        if self._task is not None and self._worker.is_alive():
            self.heartbeat_pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self._prefix))

    def _publish(self, event: TokenEvent) -> None:
        if self.context.ok():
            self.tokens_pub.publish(String(data=event.to_json()))

    def _publish_metrics(self, rid: str, task: Task, settings: dict, response, capture_t: float) -> None:
        m = response.metrics
        values = {
            "response": rid, "task": task.number, "instruction": task.instruction, "mode": settings["mode"],
            "text": response.text, "tokens": m.tokens, "capture_t": capture_t,
            "frame_age_s": response.started_t - capture_t,
            "latency_s": response.ended_t - capture_t,        # capture -> last token final
            "ttft_s": m.ttft_s, "ttc_s": m.ttc_s, "rounds": m.rounds, "drafted": m.drafted,
            "accepted": m.accepted, "acceptance": m.acceptance, "tokens_per_round": m.tokens_per_round,
            "predrafts": m.predrafts, "hits": m.hits, "hit_rate": m.hit_rate, "early_messages": m.early_messages,
            "exit_agreement": m.exit_agreement(), "draft_s": m.draft_s, "target_compute_s": m.target_compute_s,
            "gamma_mean": float(np.mean(m.gamma_used)) if m.gamma_used else None,
            "unverified_from": m.unverified_from, "fallback_reason": m.fallback_reason,
            "switched_to_cloud_at": m.switched_to_cloud_at,
            "bytes_up": response.bytes_up, "bytes_down": response.bytes_down,
        }
        status = DiagnosticStatus(name="draft_node: response", hardware_id="robot", message=response.text,
                                  level=DiagnosticStatus.OK if m.unverified_from is None else DiagnosticStatus.WARN)
        status.values = [KeyValue(key=k, value=v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        if self.context.ok():
            self.metrics_pub.publish(array)

    def _publish_diagnostics(self) -> None:
        link = self.decoder.link_state()
        task = self._task
        values = {"link": link, "mode": self.get_parameter("mode").value, "responses": str(self._responses),
                  "task": task.instruction if task is not None else ""}
        status = DiagnosticStatus(name="draft_node", hardware_id="robot", message=f"cloud link {link}",
                                  level=DiagnosticStatus.WARN if link == "down" else DiagnosticStatus.OK,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._task = None
            self._cv.notify_all()
        self._worker.join(timeout=5.0)
        self.decoder.close()


def main(args: list[str] | None = None) -> None:
    run_node(DraftNode, args)


if __name__ == "__main__":
    main()
