"""ROS command node: final tokens on /spec/tokens become motion on /cmd_vel or a real Go2.

A thin adapter over control.Controller (parser + safety gate + executor + backend): it decodes
messages, keeps the clock, and publishes. Every decision about what moves the robot lives in
control/, where it is tested without ROS.

Subscribes:  /spec/tokens  std_msgs/String, JSON token events (control/token_events.py); reliable
             /estop        std_msgs/Bool, reliable + transient local (a latched estop reaches late joiners)
Publishes:   /cmd_vel      geometry_msgs/Twist at rate_hz (backend "twist" only)
             /spec/actions std_msgs/String, one JSON ActionRecord per parsed sentence (TTFA for benchmarks)
"""
from __future__ import annotations

import json
import time
from dataclasses import fields

from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from spec_edge_cloud.control.actions import MotionSpeeds
from spec_edge_cloud.control.backends import Go2SdkBackend, TwistBackend
from spec_edge_cloud.control.controller import Controller
from spec_edge_cloud.control.safety import GateConfig, SafetyGate
from spec_edge_cloud.control.token_events import parse_token_event
from .spin import run_node

# Every parameter of the node, with its default (mirrored in config/robot.yaml, command_node).
PARAMETERS = {
    "backend": "twist",  # twist: publish /cmd_vel; go2_sdk: drive a Go2 through unitree_sdk2py
    **{f.name: (list(f.default) if f.name == "allowed_actions" else f.default) for f in fields(GateConfig)},
    "act_on_unverified": False,  # act on words the robot decoded alone while the cloud was gone
    "go2_interface": "eth0",  # network interface wired to the Go2
    "go2_domain_id": 0,
    "walk_speed": MotionSpeeds.walk,
    "strafe_speed": MotionSpeeds.strafe,
    "turn_speed": MotionSpeeds.turn,
}
TOKENS_QOS = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)  # a lost word stops a plan
ESTOP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)


class CommandNode(Node):
    def __init__(self) -> None:
        super().__init__("command_node")
        p = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        p["allowed_actions"] = tuple(p["allowed_actions"])
        gate = SafetyGate(GateConfig(**{f.name: p[f.name] for f in fields(GateConfig)}))
        speeds = MotionSpeeds(p["walk_speed"], p["strafe_speed"], p["turn_speed"])
        if p["backend"] == "twist":
            self._cmd_vel = self.create_publisher(Twist, "/cmd_vel", 10)
            self.backend = TwistBackend(self._publish_twist)
        elif p["backend"] == "go2_sdk":
            self.backend = Go2SdkBackend(p["go2_interface"], p["go2_domain_id"])
            self.backend.start()
        else:
            raise ValueError(f"parameter backend must be 'twist' or 'go2_sdk', got {p['backend']!r}")
        self.controller = Controller(self.backend, gate, speeds, act_on_unverified=p["act_on_unverified"])
        self.actions = self.create_publisher(String, "/spec/actions", 100)
        self.create_subscription(String, "/spec/tokens", self._on_tokens, TOKENS_QOS)
        self.create_subscription(Bool, "/estop", self._on_estop, ESTOP_QOS)
        self.create_timer(gate.config.period, lambda: self.controller.tick(time.monotonic()))
        self.get_logger().info(f"command node: backend {p['backend']}, {gate.config.rate_hz:g} Hz, "
                               f"allowed {sorted(gate.allowed)}")

    def _on_tokens(self, msg: String) -> None:
        try:
            event = parse_token_event(msg.data)
        except ValueError as e:
            self.get_logger().warning(f"dropped a token event: {e}")
            return
        now = time.monotonic()
        records = self.controller.on_event(event, now, time.time())
        for record in records:
            self.actions.publish(String(data=json.dumps(record.to_dict())))
        if any(r.kind == "action" for r in records):
            self.controller.tick(now)  # start moving now rather than at the next timer tick

    def _on_estop(self, msg: Bool) -> None:
        now = time.monotonic()
        self.controller.set_estop(msg.data, now)
        self.controller.tick(now)  # the zero goes out at once, not at the next timer tick
        self.get_logger().warning(f"estop {'LATCHED' if msg.data else 'released'}")

    def _publish_twist(self, vx: float, vy: float, vyaw: float) -> None:
        if self.context.ok():  # the last zero, from close(), may come after Ctrl-C shut ROS down
            t = Twist()
            t.linear.x, t.linear.y, t.angular.z = float(vx), float(vy), float(vyaw)
            self._cmd_vel.publish(t)

    def close(self) -> None:
        self.backend.close()


def main(args: list[str] | None = None) -> None:
    run_node(CommandNode, args)


if __name__ == "__main__":
    main()
