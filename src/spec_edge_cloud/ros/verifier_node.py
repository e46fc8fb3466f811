"""ROS verifier node (cloud): the ZeroMQ verifier server of transport/ as a node, with diagnostics.

The robots talk to it over ZeroMQ, not DDS (DDS does not cross the internet well); the node only
adds ROS parameters and a DiagnosticArray on /diagnostics once a second (endpoint, rounds, frames,
errors, open sessions). Cloud hosts without ROS run the same server as `spec-edge-cloud verifier`;
both read `verifier_node: ros__parameters` of config/cloud.yaml.

Parameters: target_dir, exits_dir, exit_layers, target_profile (the model), every field of
transport.server.ServerConfig (bind, keys, limits) and of fleet.config.FleetConfig: with `replicas`
above 0 the node is a fleet's front, its replicas on Ray (docs/fleet.md), and /diagnostics has one
status per replica.
"""
from __future__ import annotations

from dataclasses import fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter

from spec_edge_cloud.fleet.config import FleetConfig
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer
from .spin import run_node

MODEL_PARAMETERS = {
    "target_dir": "models/target",   # the target model's directory
    "exits_dir": "",                 # its exit heads ("": beside the target)
    "target_profile": "",            # timing emulation (a profile name or JSON file); "" runs at real speed
}
# Every parameter of the node, with its default (mirrored in config/cloud.yaml, verifier_node);
# exit_layers (integer array, unset: every trained exit) is declared apart: ROS cannot infer an empty list's type.
PARAMETERS = {**MODEL_PARAMETERS, **{f.name: f.default for f in fields(ServerConfig)},
              **{f.name: f.default for f in fields(FleetConfig)}}


class VerifierNode(Node):
    def __init__(self) -> None:
        super().__init__("verifier_node")
        p = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        exit_layers = self.declare_parameter("exit_layers", Parameter.Type.INTEGER_ARRAY).value
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.target = str(p["target_dir"])
        self.pool = None
        if p["replicas"]:
            from spec_edge_cloud.fleet.front import open_fleet
            model = {k: p[k] for k in MODEL_PARAMETERS} | {"exit_layers": list(exit_layers or []) or None}
            self.server, self.pool = open_fleet(FleetConfig(**{f.name: p[f.name] for f in fields(FleetConfig)}), model,
                                                {f.name: p[f.name] for f in fields(ServerConfig)})
            self.endpoint = self.server.endpoint
            self.create_timer(1.0, self._publish_fleet)
            self.get_logger().info(f"verifier ready on {self.endpoint} (fleet front: {len(self.pool.slots)} "
                                   f"replicas on Ray at {[s.endpoint for s in self.pool.slots]})")
            return
        from spec_edge_cloud.transport.assembly import VerifierConfig, open_verifier
        engine = open_verifier(VerifierConfig(p["target_dir"], p["exits_dir"], tuple(exit_layers or ()),
                                              p["target_profile"]))
        self.server = VerifierServer(engine, ServerConfig(**{f.name: p[f.name] for f in fields(ServerConfig)}))
        self.endpoint = self.server.start()
        self.emulated = engine.pacer.profile.name if engine.pacer is not None else ""
        self.create_timer(1.0, self._publish_diagnostics)
        note = f", timings EMULATED with profile {self.emulated}" if self.emulated else ""
        self.get_logger().info(f"verifier ready on {self.endpoint} (target {self.target}, exits "
                               f"{engine.heads.layers if engine.heads else []}{note})")

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
