"""QoS of the topics this package's nodes share beyond the command node's (kept apart so that a
light process, such as the demo's operator, can use them without importing torch)."""
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# /instruction: the latest task reaches a node that starts late (transient local), and none is lost.
INSTRUCTION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
