"""ROS verifier node (cloud): the ZeroMQ verifier server of transport/ as a node, with diagnostics.

The robots talk to it over ZeroMQ, not DDS (DDS does not cross the internet well); the node only
adds ROS parameters and a DiagnosticArray on /diagnostics once a second (endpoint, rounds, frames,
errors, open sessions). Cloud hosts without ROS run the same server as `spec-edge-cloud verifier`;
both read `/**/verifier_node: ros__parameters` of config/cloud.yaml.

Parameters (PARAMETERS, all read at start-up only: `ros2 param set` refuses them): the model
(target_dir, exits_dir, exit_layers, target_profile), where and how it runs (device, dtype, cache,
cache_slots, max_cache_len, compile), every field of transport.server.ServerConfig (bind, keys,
limits) and of fleet.config.FleetConfig, declared from their fields with their help and ranges:
with `replicas` above 0 the node is a fleet's front, its replicas on Ray (docs/fleet.md), and
/diagnostics has one status per replica.
"""
from __future__ import annotations

from dataclasses import fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter

from spec_edge_cloud.fleet.config import FleetConfig
from spec_edge_cloud.modeling.placement import DTYPES
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer
from .params import Param, declare, field_params
from .share import resolve_path
from .spin import run_node

# The keys of VerifierConfig.from_params (commands.verifier.MODEL_KEYS), as the verifier command takes them.
MODEL_PARAMETERS = {
    "target_dir": Param("models/target", "the target model's directory", True),
    "exits_dir": Param("", "its exit heads (empty: beside the target)", True),
    "exit_layers": Param([], "exit layers to serve (unset: every trained exit)", True,
                         type=Parameter.Type.INTEGER_ARRAY),
    "target_profile": Param("", "timing emulation (a profile name or JSON file); empty: real speed", True),
    "device": Param("auto", "where the target runs: auto (a GPU if any), cpu, cuda, cuda:N", True),
    "dtype": Param("auto", "the target's precision (auto: bfloat16 on a GPU, float32 on the CPU)", True,
                   choices=("auto", *DTYPES)),
    "cache": Param("auto", "KV cache: static (a preallocated slot per session), dynamic, or auto (static on a "
                   "GPU or below float32)", True, choices=("auto", "dynamic", "static")),
    "cache_slots": Param(16, "static cache slots", True, (1, 4096)),
    "max_cache_len": Param(0, "tokens per static slot (0: the model's context, at most 2048)", True, (0, None)),
    "compile": Param(False, "capture the static passes as CUDA graphs, one per segment between exits", True),
}
# Every parameter of the node, with its default (mirrored in config/cloud.yaml, verifier_node).
PARAMETERS = {**MODEL_PARAMETERS, **field_params(ServerConfig, read_only=True),
              **field_params(FleetConfig, read_only=True)}


def _check(values: dict) -> None:
    ServerConfig(**{f.name: values[f.name] for f in fields(ServerConfig)})
    FleetConfig(**{f.name: values[f.name] for f in fields(FleetConfig)})


class VerifierNode(Node):
    NODE_NAME = "verifier_node"

    def __init__(self) -> None:
        super().__init__(self.NODE_NAME)
        p = declare(self, PARAMETERS, _check)
        model = {k: p[k] for k in MODEL_PARAMETERS} | {"exit_layers": list(p["exit_layers"]) or None,
                                                      "target_dir": str(resolve_path(p["target_dir"], "target_dir")),
                                                      "exits_dir": str(resolve_path(p["exits_dir"], "exits_dir"))
                                                      if p["exits_dir"] else ""}
        server = {f.name: p[f.name] for f in fields(ServerConfig)}
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.target = model["target_dir"]
        self.pool = None
        if p["replicas"]:
            from spec_edge_cloud.fleet.front import open_fleet
            self.server, self.pool = open_fleet(FleetConfig(**{f.name: p[f.name] for f in fields(FleetConfig)}), model,
                                                server)
            self.endpoint = self.server.endpoint
            self.create_timer(1.0, self._publish_fleet)
            self.get_logger().info(f"verifier ready on {self.endpoint} (fleet front: {len(self.pool.slots)} "
                                   f"replicas on Ray at {[s.endpoint for s in self.pool.slots]})")
            return
        from spec_edge_cloud.transport.assembly import VerifierConfig, open_verifier
        engine = open_verifier(VerifierConfig.from_params(model))
        self.server = VerifierServer(engine, ServerConfig(**server))
        self.endpoint = self.server.start()
        self.emulated = p["target_profile"]
        self.create_timer(1.0, self._publish_diagnostics)
        note = f", timings EMULATED with profile {self.emulated}" if self.emulated else ""
        self.get_logger().info(f"verifier ready on {self.endpoint} (target {self.target} on {engine.bundle.device} "
                               f"{engine.bundle.dtype}, exits {engine.heads.layers if engine.heads else []}{note})")

    def _publish_diagnostics(self) -> None:
        values = {"endpoint": self.endpoint, "target": self.target, "emulated_profile": self.emulated,
                  "sessions": len(self.server.service.sessions), "pending_steps": self.server.scheduler.pending(),
                  **self.server.counters.copy()}
        self._publish([DiagnosticStatus(name="verifier_node", hardware_id="cloud", level=DiagnosticStatus.OK,
                                        message=f"serving on {self.endpoint}",
                                        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])])

    def _publish_fleet(self) -> None:
        """One status per replica: ERROR while it is down, WARN while it drains."""
        summary = self.pool.summary()
        statuses = [DiagnosticStatus(name=f"verifier_node/{r['name']}", hardware_id=r["endpoint"],
                                     level=DiagnosticStatus.ERROR if not r["healthy"] else
                                     DiagnosticStatus.WARN if r["draining"] else DiagnosticStatus.OK,
                                     message="down" if not r["healthy"] else "draining" if r["draining"] else "serving",
                                     values=[KeyValue(key=k, value=str(v)) for k, v in r.items()])
                    for r in summary["replicas"]]
        front = {"endpoint": self.endpoint, "target": self.target, "p95_wait_s": summary["p95_wait_s"],
                 "recoveries_s": summary["recoveries_s"], **self.server.counters}
        self._publish([DiagnosticStatus(name="verifier_node", hardware_id="cloud", level=DiagnosticStatus.OK,
                                        message=f"fleet front on {self.endpoint}",
                                        values=[KeyValue(key=k, value=str(v)) for k, v in front.items()]), *statuses])

    def _publish(self, statuses: list) -> None:
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(array)

    def close(self) -> None:
        self.server.stop()
        if self.pool is not None:
            self.pool.close()


def main(args: list[str] | None = None) -> None:
    run_node(VerifierNode, args)


if __name__ == "__main__":
    main()
