"""A fleet's knobs: the `verifier_node` keys of config/cloud.yaml that are neither the model's nor the server's."""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..transport.server import check_fields


@dataclass
class FleetConfig:
    replicas: int = 0                    # verifier replicas on Ray (0: one process, no Ray)
    ray: str = "local"                   # local (a cluster of this machine), auto (the running one), or HOST:PORT
    min_replicas: int = 0                # autoscaling bounds (0: = replicas, i.e. a fixed fleet)
    max_replicas: int = 0
    replica_num_cpus: float = 1.0        # Ray resources of each replica
    replica_num_gpus: float = -1.0       # -1: one GPU each if the cluster has GPUs, else none
    replica_bind: str = "tcp://127.0.0.1:0"  # each replica's own ROUTER; tcp://0.0.0.0:0 on a cluster
    scale_up_wait_s: float = 0.5         # add a replica when the p95 queue wait over the window passes this
    scale_window_s: float = 10.0
    scale_down_idle_s: float = 30.0      # drain a replica that had no session for this long
    drain_timeout_s: float = 300.0       # a drained replica goes when its sessions end, or after this
    health_interval_s: float = 0.5       # how often the front asks each replica for its state

    def __post_init__(self) -> None:
        problems = check_fields(self, _RANGES)
        lo, hi = self.bounds
        if self.replicas and not lo <= self.replicas <= hi:
            problems.append(f"replicas = {self.replicas} is outside min_replicas..max_replicas = {lo}..{hi}")
        if problems:
            raise ValueError("fleet parameters: " + "; ".join(problems))

    @property
    def bounds(self) -> tuple[int, int]:
        return self.min_replicas or self.replicas, self.max_replicas or self.replicas

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


_RANGES = {"replicas": (0, 1024), "min_replicas": (0, 1024), "max_replicas": (0, 1024),
           "replica_num_cpus": (0.0, 1024.0), "replica_num_gpus": (-1.0, 64.0), "scale_up_wait_s": (0.0, None),
           "scale_window_s": (0.1, None), "scale_down_idle_s": (0.0, None), "drain_timeout_s": (0.0, None),
           "health_interval_s": (0.01, 60.0)}
