"""A minimal DDS round trip: proves rclpy and the message packages work in this environment."""
from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=["pub", "pingpong"], default="pingpong",
                        help="pub: publish on /smoke until a reply arrives on /smoke_ack; "
                             "pingpong: both in one process")
    parser.add_argument("--timeout", type=float, default=10.0)


def run(args: argparse.Namespace) -> int:
    import rclpy
    from std_msgs.msg import String

    rclpy.init()
    node = rclpy.create_node("smoke_pub")
    acks: list[str] = []
    node.create_subscription(String, "smoke_ack", lambda m: acks.append(m.data), 10)
    pub = node.create_publisher(String, "smoke", 10)
    if args.role == "pingpong":
        echo = rclpy.create_node("smoke_echo")
        ack_pub = echo.create_publisher(String, "smoke_ack", 10)
        echo.create_subscription(String, "smoke", lambda m: ack_pub.publish(String(data=m.data)), 10)
    deadline = time.monotonic() + args.timeout
    while not acks and time.monotonic() < deadline:
        pub.publish(String(data="ping"))
        rclpy.spin_once(node, timeout_sec=0.05)
        if args.role == "pingpong":
            rclpy.spin_once(echo, timeout_sec=0.05)
    ok = bool(acks)
    print("smoke: ok" if ok else "smoke: no reply")
    rclpy.shutdown()
    return 0 if ok else 1
