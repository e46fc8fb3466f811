"""rclpy over real DDS: a node in another process echoes what this process publishes."""
import subprocess
import sys
import time

import pytest
from processes import stop

rclpy = pytest.importorskip("rclpy")
from std_msgs.msg import String  # noqa: E402

ECHO = """
import rclpy
from rclpy.executors import ExternalShutdownException
from std_msgs.msg import String
rclpy.init()
n = rclpy.create_node('smoke_echo')
pub = n.create_publisher(String, 'smoke_ack', 10)
n.create_subscription(String, 'smoke', lambda m: pub.publish(String(data=m.data + '!')), 10)
try:
    rclpy.spin(n)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


def test_two_processes_exchange_a_message_over_dds():
    echo = subprocess.Popen([sys.executable, "-c", ECHO])
    try:
        rclpy.init()
        node = rclpy.create_node("smoke_test")
        got = []
        node.create_subscription(String, "smoke_ack", lambda m: got.append(m.data), 10)
        pub = node.create_publisher(String, "smoke", 10)
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            pub.publish(String(data="ping"))
            rclpy.spin_once(node, timeout_sec=0.1)
        assert got and got[0] == "ping!"
    finally:
        stop(echo)
        if rclpy.ok():
            rclpy.shutdown()


def test_cli_smoke_pingpong():
    out = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "smoke"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "smoke: ok" in out.stdout
