"""ROS draft node (robot): instruction + freshest camera frame -> one VLM response -> token events.

A thin adapter: the task loop (when to answer again, when the task is over) is
control/task_loop.py, the decoding is ros/robot_decoder.py; this node moves messages between them
and ROS. On each new `instruction`, and every `replan_period_s` after a response while the task
runs, it decodes one answer from the freshest frame of `camera/image_raw` in the configured mode
through the link to the cloud (ZeroMQ `endpoint`, or an `inprocess_target` verified in this
process), and streams what it learns as token events (control/token_events.py) on `spec/tokens`:

    start        when the response begins (the command node drops the previous plan: the robot
                 waits for an answer made from this frame, not a stale one)
    provisional  words an early exit proposed (never move the robot)
    rollback     the final verdict disagreed with the provisional words
    final        words the target's final layer committed (these move the robot)
    unverified   words the robot decoded alone after the cloud missed `deadline_s`
    end          the response is complete

While a task runs, a std_msgs/Header on spec/heartbeat every HEARTBEAT_PERIOD_S says the node is
alive: the command node stops a plan whose producer went silent (a killed or hung draft node).

Each event carries capture_t, the frame's stamp, and t, both on the node clock (sim time under
`use_sim_time`), so latency is measured from the camera on one clock. After each response a
DiagnosticArray on `spec/metrics` reports latency, acceptance, hit rate and bytes; once a second
`/diagnostics` says whether the cloud link is up, the mode, and the task. Topic names are relative
(a namespace puts one robot's topics apart from another's); `/diagnostics` is global, as ROS has it.

Parameters (PARAMETERS, config/robot.yaml): the decoding settings are DecodeConfig's fields and the
task settings TaskSettings' fields, with their defaults, ranges and validation; they can be changed
while the node runs (`ros2 param set /draft_node mode cloud`) and apply from the next response. The
model, device and link parameters are read at start-up only (read_only).
"""
from __future__ import annotations

import json
import uuid

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from spec_edge_cloud.control.task_loop import Cancelled, Task, TaskSettings, TaskWorker, observation_reached, \
    settings_from
from spec_edge_cloud.control.token_events import TokenEvent
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.modeling.placement import DTYPES
from spec_edge_cloud.modeling.quantize import QUANTIZATIONS

from . import images
from .command_node import HEARTBEAT_PERIOD_S, HEARTBEAT_QOS, TOKENS_QOS
from .params import Param, current, declare, field_params
from .qos import INSTRUCTION_QOS
from .robot_decoder import open_robot_decoder
from .spin import run_node

IMAGE_TOPIC, INSTRUCTION_TOPIC, TOKENS_TOPIC, METRICS_TOPIC = \
    "camera/image_raw", "instruction", "spec/tokens", "spec/metrics"
STARTUP = {
    "draft_model": Param("models/draft", "the draft VLM's directory", True),
    "device": Param("auto", "where the draft runs: auto (a GPU if any), cpu, cuda, cuda:N", True),
    "dtype": Param("auto", "the draft's precision (auto: bfloat16 on a GPU, float32 on the CPU)", True,
                   choices=("auto", *DTYPES)),
    "quantize": Param("none", "weight-only quantization of the draft", True, choices=QUANTIZATIONS),
    "endpoint": Param("", "tcp://host:port of the verifier (or of a link emulator before it)", True),
    "server_public_key": Param("", "CurveZMQ (required off this host): the verifier's NAME.key", True),
    "client_secret_key": Param("", "CurveZMQ: this robot's NAME.key_secret", True),
    "insecure": Param(False, "allow plaintext to an endpoint off this host", True),
    "expect_model": Param("", "refuse a cloud serving another target (its model fingerprint)", True),
    "inprocess_target": Param("", "instead of endpoint: a target model directory verified in this process", True),
    "inprocess_rtt_ms": Param(0.0, "round trip added to the in-process link", True, (0.0, None)),
    "target_profile": Param("", "timing emulation of the in-process target (a profile name or file)", True),
    "draft_profile": Param("", "timing emulation of the draft, e.g. go2", True),
}
# Every parameter of the node, with its default (mirrored in config/robot.yaml, draft_node).
PARAMETERS = {**field_params(DecodeConfig), **field_params(TaskSettings), **STARTUP}
RUNTIME = tuple(name for name, p in PARAMETERS.items() if not p.read_only)


def check(values: dict) -> None:
    """The decoding and task settings validate themselves (DecodeConfig, TaskSettings)."""
    DecodeConfig(**{k: values[k] for k in DecodeConfig.defaults()})
    settings_from(values)


class DraftNode(Node):
    NODE_NAME = "draft_node"

    def __init__(self) -> None:
        super().__init__(self.NODE_NAME)
        p = declare(self, PARAMETERS, check)
        self.decoder = open_robot_decoder(p, clock=self._now)
        self.tokens_pub = self.create_publisher(String, TOKENS_TOPIC, TOKENS_QOS)
        self.metrics_pub = self.create_publisher(DiagnosticArray, METRICS_TOPIC, 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.heartbeat_pub = self.create_publisher(Header, "spec/heartbeat", HEARTBEAT_QOS)
        self.create_timer(HEARTBEAT_PERIOD_S, self._heartbeat)
        self.create_timer(1.0, self._publish_diagnostics)
        self.worker: TaskWorker[Image] = TaskWorker(self._answer, self._halt, self.decoder.cancel,
                                                    lambda: settings_from(self._runtime()), self._now)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, INSTRUCTION_QOS)
        self.create_subscription(Image, IMAGE_TOPIC, self.worker.frame, qos_profile_sensor_data)
        self._prefix = uuid.uuid4().hex[:6]
        self._name = self.get_fully_qualified_name().lstrip("/")   # draft_node, or robot1/draft_node
        self._responses = 0
        self.worker.start()
        self.get_logger().info(f"draft node: mode {p['mode']}, {self.decoder.description}")

    def _now(self) -> float:
        """The node clock in seconds: the clock of every stamp and decision of this node."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _runtime(self) -> dict:
        return current(self, RUNTIME)

    def _on_instruction(self, msg: String) -> None:
        task = self.worker.instruct(msg.data)
        if task is not None:
            self.get_logger().info(f"task {task.number}: {task.instruction!r}")

    def _next_id(self) -> str:
        self._responses += 1
        return f"{self._prefix}-{self._responses}"

    def _answer(self, task: Task, msg: Image) -> bool:
        """One response to `task` on this frame; True when the model says the task is done."""
        capture_t = images.seconds(msg.header.stamp)
        image = images.rgb_from_image(msg)
        rid = self._next_id()
        settings = self._runtime()
        final_words: list[str] = []

        def emit(kind: str, index: int, tokens: list[int]) -> None:
            if not self.worker.is_current(task):
                raise Cancelled()
            words = self.decoder.words(tokens)
            if kind in ("final", "unverified"):
                final_words.extend(words)
            self._publish(TokenEvent(rid, kind, index, tuple(tokens), tuple(words), self._now(), capture_t))

        self._publish(TokenEvent(rid, "start", 0, (), (), self._now(), capture_t))
        response = self.decoder.generate(task.instruction, image, settings, emit)
        self._publish(TokenEvent(rid, "end", len(response.tokens), (), (), self._now(), capture_t))
        self._publish_metrics(rid, task, settings, response, capture_t)
        self.get_logger().info(f"{rid} ({settings['mode']}): {response.text!r}")
        return observation_reached(final_words)

    def _halt(self, reason: str) -> None:
        """An empty response: the command node drops its plan and the robot stops."""
        rid = self._next_id()
        now = self._now()
        self._publish(TokenEvent(rid, "start", 0, (), (), now, None))
        self._publish(TokenEvent(rid, "end", 0, (), (), now, None))
        self.get_logger().info(f"{rid}: robot stopped ({reason})")

    def _heartbeat(self) -> None:
        """Alive while a task runs and the worker that decodes for it is."""
        if self.worker.task is not None and self.worker.alive:
            self.heartbeat_pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self._prefix))

    def _publish(self, event: TokenEvent) -> None:
        if self.context.ok():
            self.tokens_pub.publish(String(data=event.to_json()))

    def _publish_metrics(self, rid: str, task: Task, settings: dict, response, capture_t: float) -> None:
        m = response.metrics
        values = {  # the decoding metrics as every benchmark has them, with what the node knows besides
            "response": rid, "task": task.number, "instruction": task.instruction, **m.to_dict(),
            "mode": settings["mode"], "text": response.text, "capture_t": capture_t,
            "frame_age_s": response.started_t - capture_t,
            "latency_s": response.ended_t - capture_t,        # capture -> last token final
            "gamma_mean": float(np.mean(m.gamma_used)) if m.gamma_used else None,
            "bytes_up": response.bytes_up, "bytes_down": response.bytes_down,
        }
        status = DiagnosticStatus(name=f"{self._name}: response", hardware_id="robot", message=response.text,
                                  level=DiagnosticStatus.OK if m.unverified_from is None else DiagnosticStatus.WARN)
        status.values = [KeyValue(key=k, value=v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        if self.context.ok():
            self.metrics_pub.publish(array)

    def _publish_diagnostics(self) -> None:
        link = self.decoder.link_state()
        task = self.worker.task
        values = {"link": link, "mode": self.get_parameter("mode").value, "responses": str(self._responses),
                  "task": task.instruction if task is not None else ""}
        status = DiagnosticStatus(name=self._name, hardware_id="robot", message=f"cloud link {link}",
                                  level=DiagnosticStatus.WARN if link == "down" else DiagnosticStatus.OK,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        self.worker.stop()
        self.decoder.close()   # a round waiting on the cloud returns now, not at its deadline
        self.worker.join()


def main(args: list[str] | None = None) -> None:
    run_node(DraftNode, args)


if __name__ == "__main__":
    main()
