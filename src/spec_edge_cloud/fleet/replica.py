"""One replica of a fleet: a whole verifier (`VerifierServer`: its own ZeroMQ endpoint, CURVE, limits,
batching) around its own copy of the target.

`pool.ReplicaPool` runs it as a Ray actor, so Ray places it on whatever node has the resources; the
robots talk to its endpoint directly (the front only names it), so a round goes through the same
code as with one verifier process. The actor's own methods answer the front from the actor's thread
while the server's thread serves: they only read counters (and set `draining`), never the socket.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import msgspec

from ..transport.assembly import VerifierConfig, open_verifier
from ..transport.server import ServerConfig, VerifierServer


LIVE_S = 2.0  # a robot heard from this recently is connected (its link sends a heartbeat every 0.5 s)


class Replica:
    def __init__(self, model: dict, server: dict):
        self.server = VerifierServer(open_verifier(VerifierConfig.from_params(model)), ServerConfig.from_params(server))
        self.endpoint = advertised(self.server.start())

    def info(self) -> dict:
        """Where robots reach it, and what it serves (the front's WELCOME repeats it)."""
        w = self.server.welcome
        return {"endpoint": self.endpoint, "welcome": msgspec.structs.asdict(w)}

    def stats(self) -> dict:
        """Its state for load balancing, autoscaling and the health report; `waits` (each request's
        wait for its first turn since the last call) are handed over once."""
        srv, svc = self.server, self.server.service
        waits = []
        while svc.scheduler.waits:
            waits.append(svc.scheduler.waits.popleft())
        passes = _retry(lambda: dict(svc.scheduler.batches))
        n = sum(passes.values())
        tokens = srv.compute["tokens"]
        return {"endpoint": self.endpoint, "pid": os.getpid(), "alive": not srv.stopped.is_set(),
                "draining": svc.draining,
                "sessions": len(svc.sessions), "queued": _retry(svc.scheduler.pending), "waits": waits,
                "rounds": srv.counters["rounds"], "passes": n,
                "rows_per_pass": sum(k * v for k, v in passes.items()) / n if n else 0.0,
                "compute_s": srv.compute["pass_s"], "tokens": tokens,
                "device_s_per_token": srv.compute["pass_s"] / tokens if tokens else 0.0,
                "quiet_s": srv.quiet_s(), "robots": srv.live_connections(LIVE_S)}

    def drain(self) -> None:
        """Take no new session (they are answered `moved`); the ones here go on to their end."""
        self.server.service.draining = True

    def stop(self) -> None:
        self.server.stop()


def advertised(bound: str) -> str:
    """The endpoint robots can reach: a wildcard bind is named by this node's address."""
    parts = urlsplit(bound)
    if parts.hostname not in ("0.0.0.0", "::", "*"):
        return bound
    import ray
    return f"{parts.scheme}://{ray.util.get_node_ip_address()}:{parts.port}"


def _retry(read, tries: int = 5):
    """Read a structure the serving thread may change meanwhile (a dict resized mid-iteration)."""
    for _ in range(tries - 1):
        try:
            return read()
        except RuntimeError:
            continue
    return read()
