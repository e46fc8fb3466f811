"""The demo's operator and recorder: one rclpy node beside the pipeline's processes.

As the operator it does what a person would: switch the draft node's mode (a parameter), reset the
simulator to an episode's seed (/sim/reset), give the task (/instruction) and take it back (an empty
instruction stops the robot). As the recorder it keeps everything the pipeline says (token events,
parsed actions, response metrics, odometry, episode outcomes) with receipt times, and cuts out one
`ModeRun` per episode and mode.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Int64, String

from .command_node import TOKENS_QOS
from .qos import INSTRUCTION_QOS

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class ResponseLog:
    """One response of the draft node, from its token events and metrics."""

    id: str
    capture_t: float | None
    start_t: float
    end_t: float | None = None
    first_final_t: float | None = None
    words: dict[int, str] = field(default_factory=dict)   # final words by index
    provisional: int = 0
    rollbacks: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(w for _, w in sorted(self.words.items()) if w)

    @property
    def ttc_s(self) -> float | None:
        """Frame capture -> last token final (the response's end event follows its last commit)."""
        return None if self.end_t is None or self.capture_t is None else self.end_t - self.capture_t


@dataclass
class ModeRun:
    """One episode in one mode: what happened and how fast."""

    mode: str
    seed: int
    instruction: str
    started_t: float
    ended_t: float
    outcome: dict | None
    responses: list[ResponseLog]
    actions: list[dict]
    trajectory: list[tuple[float, float]]

    @property
    def success(self) -> bool:
        return bool(self.outcome and self.outcome.get("success"))

    @property
    def result(self) -> str:
        if self.outcome is None:
            return "no outcome"
        return "success" if self.outcome["success"] else f"fail ({self.outcome['reason']})"

    @property
    def task_s(self) -> float | None:
        """Sim time from the episode's start to its end (success, failure or timeout)."""
        return None if self.outcome is None else float(self.outcome["time"])

    @property
    def ttfa_s(self) -> float | None:
        """Frame capture -> first motion command (the first action the command node queued)."""
        first = next((a for a in self.actions if a["kind"] == "action" and a["capture_t"] is not None), None)
        return None if first is None else first["t"] - first["capture_t"]

    @property
    def completed(self) -> list[ResponseLog]:
        """Answers decoded to their end (the last one may have been cut off when the episode ended)."""
        return [r for r in self.responses if r.ttc_s is not None]

    @property
    def first_ttc_s(self) -> float | None:
        return self.completed[0].ttc_s if self.completed else None

    def decoded_as(self) -> str:
        """How the answers were decoded: plain cloud streaming (nothing drafted), speculation, or
        speculation that switched to cloud streaming part-way (what `adaptive` chose)."""
        kinds = ["cloud" if not r.metrics.get("drafted") else
                 "spec>cloud" if r.metrics.get("switched_to_cloud_at") is not None else "spec"
                 for r in self.completed if r.metrics]
        return ", ".join(f"{kinds.count(k)} {k}" for k in ("cloud", "spec", "spec>cloud") if k in kinds)

    def mean(self, key: str) -> float | None:
        values = [r.metrics[key] for r in self.responses if r.metrics.get(key) is not None]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "seed": self.seed, "instruction": self.instruction, "outcome": self.outcome,
                "result": self.result, "decoded_as": self.decoded_as(), "task_s": self.task_s,
                "ttfa_s": self.ttfa_s, "first_ttc_s": self.first_ttc_s, "wall_s": self.ended_t - self.started_t,
                "responses": [{"id": r.id, "text": r.text, "ttc_s": r.ttc_s, "provisional_events": r.provisional,
                               "rollbacks": r.rollbacks, "metrics": r.metrics} for r in self.responses],
                "actions": self.actions, "trajectory": self.trajectory}


class DemoObserver(Node):
    def __init__(self) -> None:
        super().__init__("demo_operator")
        self.instruction_pub = self.create_publisher(String, "/instruction", INSTRUCTION_QOS)
        self.reset_pub = self.create_publisher(Int64, "/sim/reset", RELIABLE)
        self.draft_params = AsyncParameterClient(self, "draft_node")
        self.responses: dict[str, ResponseLog] = {}
        self.actions: list[dict] = []
        self.outcomes: list[tuple[float, dict]] = []
        self.odom: list[tuple[float, float, float]] = []   # (receipt time, x, y)
        self.status: dict[str, dict[str, str]] = {}         # /diagnostics by status name
        self.create_subscription(String, "/spec/tokens", self._on_tokens, TOKENS_QOS)
        self.create_subscription(String, "/spec/actions", self._on_action, RELIABLE)
        self.create_subscription(DiagnosticArray, "/spec/metrics", self._on_metrics, RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        self.create_subscription(String, "/sim/episode", self._on_episode, RELIABLE)
        self.create_subscription(Odometry, "/odom", self._on_odom, RELIABLE)

    # -- recording -------------------------------------------------------------------------------
    def _on_tokens(self, msg: String) -> None:
        e = json.loads(msg.data)
        if e["kind"] == "start":
            self.responses[e["response"]] = ResponseLog(e["response"], e["capture_t"], e["t"])
            return
        r = self.responses.get(e["response"])
        if r is None:
            return
        if e["kind"] in ("final", "unverified"):
            r.first_final_t = r.first_final_t or e["t"]
            r.words.update({e["index"] + i: w for i, w in enumerate(e["words"])})
        elif e["kind"] == "provisional":
            r.provisional += 1
        elif e["kind"] == "rollback":
            r.rollbacks += 1
        elif e["kind"] == "end":
            r.end_t = e["t"]

    def _on_action(self, msg: String) -> None:
        self.actions.append(json.loads(msg.data))

    def _on_metrics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            r = self.responses.get(values.get("response", ""))
            if r is not None:
                r.metrics = {k: (v if k in ("response", "instruction", "mode", "text") else json.loads(v))
                             for k, v in values.items()}

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.status[status.name] = {kv.key: kv.value for kv in status.values}

    def _on_episode(self, msg: String) -> None:
        self.outcomes.append((time.time(), json.loads(msg.data)))

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        if not self.odom or time.time() - self.odom[-1][0] >= 0.1:  # 10 Hz is plenty for a plot
            self.odom.append((time.time(), p.x, p.y))

    # -- waiting ---------------------------------------------------------------------------------
    def spin_until(self, condition, timeout_s: float, tick=None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
            if tick is not None:
                tick()
        return condition()

    def ready(self) -> dict[str, bool]:
        """Which parts of the pipeline are up: the verifier serving, the draft node connected to it,
        the command node listening, the simulator running."""
        return {"verifier": "verifier_node" in self.status,
                "draft": self.status.get("draft_node", {}).get("link") in ("up", "in-process"),
                "command": self.count_subscribers("/spec/tokens") >= 2,   # command node + this node
                "sim": bool(self.odom)}

    # -- operating -------------------------------------------------------------------------------
    def set_mode(self, mode: str, timeout_s: float = 10.0) -> None:
        if not self.draft_params.wait_for_services(timeout_sec=timeout_s):
            raise RuntimeError("the draft node's parameter service did not appear")
        future = self.draft_params.set_parameters([Parameter("mode", value=mode)])
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout_s)
        result = future.result()
        if result is None or not result.results[0].successful:
            raise RuntimeError(f"the draft node refused mode {mode!r}: {result and result.results[0].reason}")

    def reset(self, seed: int, start_xy: tuple[float, float], timeout_s: float = 10.0) -> None:
        """Start the seed's episode and wait until odometry shows the robot at its start."""
        sent = time.time()
        self.reset_pub.publish(Int64(data=seed))

        def at_start() -> bool:
            return bool(self.odom) and self.odom[-1][0] > sent and math.dist(self.odom[-1][1:], start_xy) < 0.15
        if not self.spin_until(at_start, timeout_s):
            raise RuntimeError(f"the simulator did not reset to seed {seed} within {timeout_s:g} s")

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def run(self, mode: str, seed: int, instruction: str, started_t: float, ended_t: float,
            outcome: dict | None) -> ModeRun:
        """Everything recorded between started_t and ended_t, as one ModeRun."""
        responses = [r for r in self.responses.values()
                     if started_t <= r.start_t <= ended_t and r.capture_t is not None]
        ids = {r.id for r in responses}
        return ModeRun(mode, seed, instruction, started_t, ended_t, outcome, responses,
                       [a for a in self.actions if a["response"] in ids],
                       [(x, y) for t, x, y in self.odom if started_t <= t <= ended_t])
