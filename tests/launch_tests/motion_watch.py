"""What the launch_testing files here watch from outside the launch, as an operator would: the task on
/instruction, the verified ("final") token events on /spec/tokens, and the first motion on /cmd_vel."""
import json
import time
from dataclasses import dataclass, field

import rclpy
from geometry_msgs.msg import Twist
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class Watched:
    instructions: list = field(default_factory=list)
    finals: list = field(default_factory=list)        # final token events with words, in order
    finals_before_motion: int | None = None          # None: the robot never moved

    def words(self) -> str:
        return " ".join(w for event in self.finals for w in event["words"])


def watch_until_motion(seconds: float, instruction: str | None = None) -> Watched:
    """Spin a listener (in its own context) until the first non-zero Twist on /cmd_vel or `seconds`;
    publish `instruction` first when given."""
    seen = Watched()
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("launch_test_operator", context=context)
        node.create_subscription(String, "/instruction", lambda m: seen.instructions.append(m.data), LATCHED)

        def on_token(msg):
            event = json.loads(msg.data)
            if event["kind"] == "final" and event["words"]:
                seen.finals.append(event)

        def on_twist(msg):
            if abs(msg.linear.x) + abs(msg.linear.y) + abs(msg.angular.z) > 0 and seen.finals_before_motion is None:
                seen.finals_before_motion = len(seen.finals)
        watched = [node.create_subscription(String, "/spec/tokens", on_token, 256),
                   node.create_subscription(Twist, "/cmd_vel", on_twist, 10)]
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + seconds
        # Tokens are not latched: give the task only once both topics are matched, or a loaded machine's
        # discovery could show the motion but not the tokens that caused it.
        while not all(s.get_publisher_count() for s in watched) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        if instruction is not None:
            node.create_publisher(String, "/instruction", LATCHED).publish(String(data=instruction))
        while seen.finals_before_motion is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        rclpy.try_shutdown(context=context)
    return seen
