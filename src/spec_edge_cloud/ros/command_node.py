"""ROS command node: final tokens on spec/tokens become motion on cmd_vel or a real Go2.

A thin adapter over control.Controller (parser + plan limits + safety gate + executor + backend):
it hands over messages, keeps the clock, and publishes. Every decision about what moves the robot
lives in control/, where it is tested without ROS. Topic names are relative, so a namespace (or a
launch remapping) gives each robot its own.

Subscribes:  spec/tokens     std_msgs/String, JSON token events (control/token_events.py); reliable
             spec/heartbeat  std_msgs/Header from the draft node while it works: with the token
                             events, what keeps a plan alive (none for watchdog_s: the robot stops)
             estop           std_msgs/Bool, reliable + transient local (a latched estop reaches late
                             joiners); with estop_timeout_s > 0 it must be re-published that often
Publishes:   cmd_vel         geometry_msgs/Twist (or TwistStamped) at rate_hz while moving; after a
                             stop, stop_zeros zero twists, then silence (backend "twist" only)
             spec/actions    std_msgs/String, one JSON ActionRecord per decision (TTFA for benchmarks)
             /diagnostics    the controller's state and, for a Go2, its SDK return codes, once a second
Services:    ~/stand, ~/sit  std_srvs/Trigger: the operator's postures. The node never stands the
                             robot up by itself; after an e-stop damped a Go2, ~/stand is the way back.
"""
from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Header, String
from std_srvs.srv import Trigger

from spec_edge_cloud.control.actions import MotionSpeeds
from spec_edge_cloud.control.backends import (GO2_SPORT_MODES, STOP_ZEROS, Go2SdkBackend, TwistBackend,
                                              describe_code)
from spec_edge_cloud.control.controller import Controller
from spec_edge_cloud.control.limits import PlanLimits
from spec_edge_cloud.control.safety import GateConfig, SafetyGate
from .params import Param, declare, field_params
from .spin import run_node

# Every parameter of the node (mirrored in config/robot.yaml, command_node). All are read at start-up
# only (read_only: `ros2 param set` is refused), the clamps and limits above all: what bounds the robot
# cannot change under a running plan. Clamps, limits and the watchdog come from GateConfig's and
# PlanLimits' fields, with their help, defaults and ranges.
PARAMETERS = {
    "backend": Param("twist", "twist: publish cmd_vel; go2_sdk: drive a Go2 through unitree_sdk2py", True,
                     choices=("twist", "go2_sdk")),
    **field_params(GateConfig, read_only=True),
    **field_params(PlanLimits, read_only=True),
    "estop_timeout_s": Param(0.0, "> 0: the estop publisher must speak this often (a false is its heartbeat), "
                                  "else the robot is held still; 0: no such check", True, (0.0, None)),
    "act_on_unverified": Param(False, "act on words the robot decoded alone while the cloud was unreachable", True),
    "twist_stamped": Param(False, "publish geometry_msgs/TwistStamped on cmd_vel instead of Twist", True),
    "frame_id": Param("base_link", "the TwistStamped header's frame", True),
    "stop_zeros": Param(STOP_ZEROS, "zero twists after a stop, then silence (twist_mux releases the input)",
                        True, (1, 1000)),
    "go2_interface": Param("eth0", "backend go2_sdk: network interface wired to the Go2", True),
    "go2_domain_id": Param(0, "backend go2_sdk: DDS domain of the Go2", True, (0, 232)),
    "go2_sport_modes": Param(list(GO2_SPORT_MODES), "backend go2_sdk: motion modes (MotionSwitcher CheckMode) "
                                                    "the node may start in", True),
    "walk_speed": Param(MotionSpeeds.walk, "m/s: walk M lasts M / walk_speed s", True, (0.0, None)),
    "strafe_speed": Param(MotionSpeeds.strafe, "m/s, strafing", True, (0.0, None)),
    "turn_speed": Param(MotionSpeeds.turn, "rad/s, turning", True, (0.0, None)),
}


def _check(p: dict[str, Any]) -> None:
    """The node's own validation: every config it builds (ValueError names what is wrong)."""
    GateConfig(**{f.name: (tuple(p[f.name]) if f.name == "allowed_actions" else p[f.name])
                  for f in fields(GateConfig)})
    PlanLimits(**{f.name: p[f.name] for f in fields(PlanLimits)})
    MotionSpeeds(p["walk_speed"], p["strafe_speed"], p["turn_speed"])
TOKENS_QOS = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)  # a lost word stops a plan
ESTOP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
HEARTBEAT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
HEARTBEAT_PERIOD_S = 0.1  # how often the draft node says it is alive: well inside watchdog_s


class CommandNode(Node):
    NODE_NAME = "command_node"

    def __init__(self) -> None:
        super().__init__(self.NODE_NAME)
        p = declare(self, PARAMETERS, _check)
        p["allowed_actions"] = tuple(p["allowed_actions"])
        gate = SafetyGate(GateConfig(**{f.name: p[f.name] for f in fields(GateConfig)}))
        limits = PlanLimits(**{f.name: p[f.name] for f in fields(PlanLimits)})
        speeds = MotionSpeeds(p["walk_speed"], p["strafe_speed"], p["turn_speed"])
        self._stamped, self._frame_id = p["twist_stamped"], p["frame_id"]
        if p["backend"] == "twist":
            self._cmd_vel = self.create_publisher(TwistStamped if self._stamped else Twist, "cmd_vel", 10)
            self.backend = TwistBackend(self._publish_twist, p["stop_zeros"])
        else:
            self.backend = Go2SdkBackend(p["go2_interface"], p["go2_domain_id"], on_code=self._on_sdk_code,
                                         sport_modes=tuple(p["go2_sport_modes"]))
            mode = self.backend.start()
            self.get_logger().info(f"Go2 on {p['go2_interface']}: motion mode {mode!r}; not standing it up "
                                   f"(call ~/stand)")
        # records are stamped on the node clock, the clock of the token events' capture_t (use_sim_time too)
        self.controller = Controller(self.backend, gate, speeds, act_on_unverified=p["act_on_unverified"],
                                     limits=limits, estop_timeout_s=p["estop_timeout_s"],
                                     wall_clock=lambda: self.get_clock().now().nanoseconds * 1e-9)
        self.actions = self.create_publisher(String, "spec/actions", 100)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(String, "spec/tokens", self._on_tokens, TOKENS_QOS)
        self.create_subscription(Header, "spec/heartbeat", self._on_heartbeat, HEARTBEAT_QOS)
        self.create_subscription(Bool, "estop", self._on_estop, ESTOP_QOS)
        self.create_service(Trigger, "~/stand", lambda req, res: self._posture("stand", res))
        self.create_service(Trigger, "~/sit", lambda req, res: self._posture("sit", res))
        self.create_timer(gate.config.period, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"command node: backend {p['backend']}, {gate.config.rate_hz:g} Hz, "
                               f"allowed {sorted(gate.allowed)}, watchdog {gate.config.watchdog_s:g} s")

    def _tick(self) -> None:
        self.controller.tick(time.monotonic())
        self._publish_records(self.controller.take_notices())

    def _on_tokens(self, msg: String) -> None:
        records = self.controller.on_message(msg.data, time.monotonic())
        self._publish_records(records)
        if any(r.kind == "action" for r in records):
            self._tick()  # start moving now rather than at the next timer tick

    def _on_heartbeat(self, msg: Header) -> None:
        self.controller.heartbeat(time.monotonic())

    def _on_estop(self, msg: Bool) -> None:
        was = self.controller.status()["estop"]
        self.controller.set_estop(msg.data, time.monotonic())
        self._tick()  # the zero goes out at once, not at the next timer tick
        now = self.controller.status()["estop"]
        if now != was:
            self.get_logger().warning(f"estop {now}" + (": damped, call ~/stand to move again"
                                                        if self.controller.needs_stand else ""))

    def _posture(self, verb: str, response: Trigger.Response) -> Trigger.Response:
        refusal = self.controller.operator_posture(verb)
        response.success = refusal is None
        response.message = refusal or f"{verb} sent"
        self.get_logger().info(f"operator {verb}: {response.message}")
        return response

    def _publish_records(self, records: list) -> None:
        for record in records:
            if record.kind == "rejected" and not record.sentence:
                self.get_logger().warning(record.reason)  # not a sentence of the answer: the stream or liveness
            self.actions.publish(String(data=json.dumps(record.to_dict())))

    def _publish_twist(self, vx: float, vy: float, vyaw: float) -> None:
        if not self.context.ok():
            return
        t = Twist()
        t.linear.x, t.linear.y, t.angular.z = float(vx), float(vy), float(vyaw)
        if self._stamped:
            msg = TwistStamped(twist=t)
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = self._frame_id
            self._cmd_vel.publish(msg)
        else:
            self._cmd_vel.publish(t)

    def _on_sdk_code(self, call: str, code: int) -> None:
        """Every unitree_sdk2py return code: failures are logged at once (and counted for /diagnostics)."""
        if code != 0:
            self.get_logger().warning(f"Go2 SDK {call} returned {describe_code(code)}",
                                      throttle_duration_sec=1.0)

    def _publish_diagnostics(self) -> None:
        state = self.controller.status()
        level = DiagnosticStatus.WARN if state["estop"] != "released" or state["needs_stand"] == "true" \
            else DiagnosticStatus.OK
        statuses = [DiagnosticStatus(name="command_node", hardware_id="robot", level=level,
                                     message=f"estop {state['estop']}, plan {state['plan']}",
                                     values=[KeyValue(key=k, value=v) for k, v in state.items()])]
        if isinstance(self.backend, Go2SdkBackend):
            codes = self.backend.code_summary()
            failed = [call for call, (last, _) in codes.items() if last != 0]
            statuses.append(DiagnosticStatus(
                name="command_node: go2 sdk", hardware_id="go2",
                level=DiagnosticStatus.WARN if failed else DiagnosticStatus.OK,
                message=f"last call failed: {', '.join(failed)}" if failed else f"mode {self.backend.mode}",
                values=[KeyValue(key="mode", value=str(self.backend.mode))] +
                       [KeyValue(key=call, value=f"last {describe_code(last)}, {n} failed")
                        for call, (last, n) in codes.items()]))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(array)

    def close(self) -> None:
        self.backend.close()
        cmd_vel = getattr(self, "_cmd_vel", None)
        if cmd_vel is not None:
            # the last zero twist must reach the subscribers before the node's participant goes away
            cmd_vel.wait_for_all_acked(Duration(seconds=1.0))


def main(args: list[str] | None = None) -> None:
    run_node(CommandNode, args)


if __name__ == "__main__":
    main()
