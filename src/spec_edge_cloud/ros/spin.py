"""The one `main` every node shares: init, spin until Ctrl-C or shutdown, close, clean up.

It also sends the package's Python `logging` to the ROS logger (so link, verifier and round
messages show under `ros2 launch` and on /rosout), and a node that cannot start with its parameters
(a wrong type, a value out of range, a missing file) ends with one FATAL line and exit code 2
instead of a traceback.

Ctrl-C (SIGINT) and SIGTERM end the spin with the ROS context still up, so a node's `close()` can
still publish: the command node's last zero twist reaches the robot before the context goes down
(rclpy's own signal handlers would shut the context down first).
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

PACKAGE_LOGGER = "spec_edge_cloud"
BAD_PARAMETER_EXIT = 2
WAKE_S = 0.1  # the longest a signal waits for the executor to come back to Python


class RosLogHandler(logging.Handler):
    """Python `logging` records of this package -> the ROS logger (console, log files, /rosout).

    Each module's records go to a child of the node's logger named after the module, so they read
    `[draft_node.transport.client]`; before the node exists, to a logger named after the module."""

    LEVELS = ((logging.CRITICAL, "fatal"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
              (logging.INFO, "info"), (logging.NOTSET, "debug"))

    def __init__(self) -> None:
        super().__init__()
        self.node: Node | None = None
        self._loggers: dict[str, Any] = {}

    def attach(self, node: Node) -> None:
        self.node, self._loggers = node, {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = self._loggers.get(record.name)
            if logger is None:
                short = record.name.removeprefix(PACKAGE_LOGGER + ".")
                logger = self.node.get_logger().get_child(short) if self.node is not None else \
                    rclpy.logging.get_logger(record.name)
                self._loggers[record.name] = logger
            method = next(m for level, m in self.LEVELS if record.levelno >= level)
            getattr(logger, method)(self.format(record))
        except Exception:  # a log line must never take the node down
            self.handleError(record)


def forward_package_logging() -> RosLogHandler:
    """Route `logging.getLogger("spec_edge_cloud...")` to ROS from now on (INFO and above)."""
    package = logging.getLogger(PACKAGE_LOGGER)
    for old in [h for h in package.handlers if isinstance(h, RosLogHandler)]:
        package.removeHandler(old)
    handler = RosLogHandler()
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    return handler


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def partial_node(error: BaseException) -> Node | None:
    """The node whose constructor raised `error` (its frame's `self`), found through the traceback:
    its participant is up although no caller holds it."""
    tb = error.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Node):
            return candidate
        tb = tb.tb_next
    return None


def end_unstarted(node: Node | None) -> None:
    """Exit with BAD_PARAMETER_EXIT: the half-built node's participant destroyed before the context,
    then the process ends at once. A node that never ran has nothing to release but its participant,
    and leaving the rest to the interpreter's teardown (DDS entities, torch) was seen to hang for a
    minute on a loaded machine after the FATAL line."""
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(BAD_PARAMETER_EXIT)


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Spin the node `make_node()` builds; its `close()` (releasing devices, threads, sockets) runs last.

    A node that cannot start with its parameters (BadParameter, or a ValueError/OSError raised while
    it sets up: a missing model directory, a wrong value) logs one FATAL line and exits with code 2."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    handler = forward_package_logging()
    try:
        node = make_node()
    except (ValueError, OSError) as e:
        name = getattr(make_node, "NODE_NAME", PACKAGE_LOGGER)
        rclpy.logging.get_logger(name).fatal(f"cannot start: {e}")
        end_unstarted(partial_node(e))
    handler.attach(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok():
            executor.spin_once(timeout_sec=WAKE_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        # Leave the objects to exit rather than to the interpreter's last full collection: over torch
        # and transformers it took a verifier node 6 of its 8 s from SIGINT to exit on this loaded
        # machine (1.6 s frozen), past ros2 launch's SIGTERM escalation.
        gc.freeze()
