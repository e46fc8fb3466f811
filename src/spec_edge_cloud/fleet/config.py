"""A fleet's knobs: the `verifier_node` keys of config/cloud.yaml that are neither the model's nor the server's."""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..decoding.modes import setting
from ..transport.server import check_fields


@dataclass
class FleetConfig:
    replicas: int = setting(0, "verifier replicas on Ray (0: one process, no Ray)", (0, 1024))
    ray: str = setting("local", "local (a cluster of this machine), auto (the running one), or HOST:PORT")
    min_replicas: int = setting(0, "autoscaling's lower bound (0: = replicas, i.e. a fixed fleet)", (0, 1024))
    max_replicas: int = setting(0, "autoscaling's upper bound (0: = replicas)", (0, 1024))
    replica_num_cpus: float = setting(1.0, "Ray CPUs of each replica", (0.0, 1024.0))
    replica_num_gpus: float = setting(-1.0, "Ray GPUs of each replica (-1: one each if the cluster has GPUs, "
                                            "else none)", (-1.0, 64.0))
    replica_bind: str = setting("tcp://127.0.0.1:0", "each replica's own ROUTER; tcp://0.0.0.0:0 on a cluster")
    scale_up_wait_s: float = setting(0.5, "add a replica when the p95 queue wait over the window passes this",
                                     (0.0, None))
    scale_window_s: float = setting(10.0, "the window of that p95", (0.1, None))
    scale_down_idle_s: float = setting(30.0, "drain a replica that had no session for this long", (0.0, None))
    drain_timeout_s: float = setting(300.0, "a drained replica goes when its sessions end, or after this",
                                     (0.0, None))
    health_interval_s: float = setting(0.5, "how often the front asks each replica for its state", (0.01, 60.0))

    def __post_init__(self) -> None:
        problems = check_fields(self)
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
