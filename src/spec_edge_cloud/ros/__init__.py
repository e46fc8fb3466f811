"""rclpy nodes and the pipeline launcher: thin adapters over the plain-Python layers below."""
