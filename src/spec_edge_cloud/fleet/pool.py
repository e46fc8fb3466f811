"""The replicas of a fleet as Ray actors: start, health, load, failover, autoscaling with drain.

Ray places each replica (`replica.Replica`, with `replica_num_cpus` / `replica_num_gpus`) on a node
that has the resources, and restarts one that dies (an actor killed, a node lost: `max_restarts`
unbounded); a restarted replica binds a fresh port, which the next health poll learns. A watcher
thread asks every replica for its state each `health_interval_s`; a replica that fails to answer
within `max(1 s, 2 polls)` is *down* and gets no new robot until it answers again.

Load balancing. `assign()` (the front calls it at each HELLO) names the healthy, non-draining
replica with the least work: its queued requests, plus its robots (its open sessions, or the robots
connected to it and heard in the last 2 s, whichever is more: a robot between responses comes back),
from its last report, plus the robots sent to it in the last 2 s that its report may not show yet;
ties go to the replica that has had fewer robots, so an idle fleet fills evenly. A robot stays with its replica for as long as its
link stays up, so a session never moves mid-response.

Autoscaling. Each report carries how long each request waited for its first turn (the queue wait);
when the 95th percentile over the last `scale_window_s` passes `scale_up_wait_s` and the fleet is
below `max_replicas`, one replica is added (and no other until it is up). A replica with no session
and no queued work for `scale_down_idle_s`, above `min_replicas`, is drained: it takes no new
session (a robot that starts one, or whose heartbeat comes while it holds none, is answered `moved`
and asks the front again), and it is removed once it has no queued work and no robot has spoken
to it for 2 s (a live robot's link heartbeats every 0.5 s, so sessions still open then are orphans of
robots that finished elsewhere), or after `drain_timeout_s`.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import ray

from .config import FleetConfig
from .replica import Replica

log = logging.getLogger(__name__)
RECENT_S = 2.0      # a robot just sent to a replica counts as its load for this long
GONE_S = 2.0        # a drained replica unheard from by any robot this long has none left


@dataclass(eq=False)
class Slot:
    """One replica as the pool sees it."""
    name: str
    actor: object
    endpoint: str = ""
    healthy: bool = False
    draining: bool = False
    stats: dict = field(default_factory=dict)
    asked: float = 0.0                     # when the outstanding stats call went
    ref: object = None                     # the outstanding stats call
    sent: deque = field(default_factory=deque)   # times robots were sent here (last RECENT_S)
    robots: int = 0                        # robots sent here in all
    idle_since: float | None = None
    drained_at: float = 0.0
    restarts: int = 0
    down_at: float | None = None
    waits: deque = field(default_factory=deque)  # (time, queue wait) over the window

    def load(self, now: float) -> int:
        """Queued requests, plus its robots (connected, or in a session), plus robots just sent here."""
        while self.sent and now - self.sent[0] > RECENT_S:
            self.sent.popleft()
        st = self.stats
        return st.get("queued", 0) + max(st.get("sessions", 0), st.get("robots", 0)) + len(self.sent)


class ReplicaPool:
    def __init__(self, config: FleetConfig, model: dict, server: dict):
        if config.replicas < 1:
            raise ValueError("a fleet needs at least one replica")
        self.config = config
        self.model, self.server = _absolute(model), _absolute(server)
        self.slots: list[Slot] = []
        self.welcome: dict = {}
        self.recoveries: list[float] = []   # seconds from a replica found down to it serving again
        self.events: deque = deque(maxlen=100)  # (time, what happened), for the report
        self._lock = threading.Lock()
        self._waits: deque = deque()        # (time, queue wait) of every replica over the window
        self._count = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._actor_class = None

    # -- life ------------------------------------------------------------------------------------
    def start(self, timeout: float = 600.0) -> None:
        """Join or start the Ray cluster, start the replicas, wait until each is up."""
        cfg = self.config
        if not ray.is_initialized():
            _join(None if cfg.ray == "local" else cfg.ray)
        gpus = cfg.replica_num_gpus if cfg.replica_num_gpus >= 0 else \
            (1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0)
        self._actor_class = ray.remote(Replica).options(num_cpus=cfg.replica_num_cpus, num_gpus=gpus,
                                                        max_restarts=-1, max_task_retries=0)
        for _ in range(cfg.replicas):
            self._add()
        first = ray.get(self.slots[0].actor.info.remote(), timeout=timeout)
        self.welcome = first["welcome"]
        deadline = time.monotonic() + timeout
        while not all(s.healthy for s in self.slots):
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not up within {timeout:g} s")
            self.poll()
            time.sleep(0.05)
        self._watcher = threading.Thread(target=self._watch, name="fleet-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        for slot in self.slots:
            ray.kill(slot.actor, no_restart=True)
        self.slots.clear()

    # -- the front's calls -----------------------------------------------------------------------
    def assign(self, avoid: str = "") -> str | None:
        """The endpoint of the replica a new robot should talk to (None: none is up); not `avoid`
        (the replica that robot just lost) while another is up."""
        now = time.monotonic()
        with self._lock:
            up = [s for s in self.slots if s.healthy and not s.draining]
            up = [s for s in up if s.endpoint != avoid] or up
            if not up:
                return None
            best = min(up, key=lambda s: (s.load(now), s.robots))
            best.sent.append(now)
            best.robots += 1
            best.idle_since = None
            return best.endpoint

    def summary(self) -> dict:
        """Per replica: health, sessions, queue, rows per pass, queue wait, device time per token."""
        with self._lock:
            reps = [{"name": s.name, "endpoint": s.endpoint, "healthy": s.healthy, "draining": s.draining,
                     "restarts": s.restarts, "robots": s.robots,
                     "p95_wait_s": _p95([w for _, w in s.waits]),
                     **{k: s.stats.get(k) for k in ("sessions", "queued", "rounds", "passes", "rows_per_pass",
                                                    "device_s_per_token")}} for s in self.slots]
            return {"replicas": reps, "p95_wait_s": _p95([w for _, w in self._waits]),
                    "recoveries_s": list(self.recoveries)}

    # -- operations ------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Kill a replica's actor as a crash would (Ray restarts it): for failover drills and benchmarks."""
        slot = next(s for s in self.slots if s.name == name)
        ray.kill(slot.actor, no_restart=False)

    def scale_to(self, n: int) -> None:
        """Add replicas, or drain the least loaded ones, until `n` are not draining."""
        with self._lock:
            active = [s for s in self.slots if not s.draining]
            for _ in range(n - len(active)):
                self._add()
            now = time.monotonic()
            for slot in sorted(active, key=lambda s: s.load(now))[:max(0, len(active) - n)]:
                self._drain(slot, now)

    def drain(self, name: str) -> None:
        """Drain one replica by name (an operator taking it out: its sessions finish, then it goes)."""
        with self._lock:
            self._drain(next(s for s in self.slots if s.name == name), time.monotonic())

    def _add(self) -> Slot:
        self._count += 1
        slot = Slot(f"replica-{self._count}", self._actor_class.remote(self.model, self.server))
        self.slots.append(slot)
        self.events.append((time.time(), f"{slot.name} added"))
        return slot

    def _drain(self, slot: Slot, now: float) -> None:
        slot.draining, slot.drained_at = True, now
        slot.actor.drain.remote()
        self.events.append((time.time(), f"{slot.name} draining"))
        log.info("fleet: draining %s (%s)", slot.name, slot.endpoint)

    def _remove(self, slot: Slot, why: str) -> None:
        ray.kill(slot.actor, no_restart=True)
        self.slots.remove(slot)
        self.events.append((time.time(), f"{slot.name} removed: {why}"))
        log.info("fleet: removed %s: %s", slot.name, why)

    # -- watching --------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.config.health_interval_s):
            try:
                self.poll()
                self.autoscale(time.monotonic())
            except Exception:  # the watcher must outlive any one bad report
                log.exception("fleet watcher")

    def poll(self) -> None:
        """Ask every replica for its state (one call outstanding each); mark the silent ones down."""
        now = time.monotonic()
        patience = max(1.0, 2 * self.config.health_interval_s)
        for slot in self.slots:
            if slot.ref is None:
                slot.ref, slot.asked = slot.actor.stats.remote(), now
        refs = [s.ref for s in self.slots]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=min(0.5, self.config.health_interval_s))
        ready = set(ready)
        now = time.monotonic()
        with self._lock:
            for slot in list(self.slots):
                if slot.ref in ready:
                    ref, slot.ref = slot.ref, None
                    try:
                        self._report(slot, ray.get(ref), now)
                    except ray.exceptions.RayError as exc:
                        self._down(slot, f"{type(exc).__name__}", now)
                elif now - slot.asked > patience and slot.endpoint:
                    self._down(slot, f"no answer for {now - slot.asked:.1f} s", now)

    def _report(self, slot: Slot, st: dict, now: float) -> None:
        if slot.endpoint and st["endpoint"] != slot.endpoint:
            slot.restarts += 1
            log.warning("fleet: %s restarted, now at %s", slot.name, st["endpoint"])
            if slot.draining:
                slot.actor.drain.remote()  # a restarted actor starts afresh: drain it again
        if slot.down_at is not None and st["alive"]:
            self.recoveries.append(now - slot.down_at)
            self.events.append((time.time(), f"{slot.name} back after {now - slot.down_at:.1f} s"))
            log.info("fleet: %s back at %s after %.1f s", slot.name, st["endpoint"], now - slot.down_at)
            slot.down_at = None
        slot.endpoint, slot.stats, slot.healthy = st["endpoint"], st, st["alive"]
        for w in st["waits"]:
            slot.waits.append((now, w))
            self._waits.append((now, w))
        busy = st["sessions"] or st["queued"] or slot.load(now)
        if busy:
            slot.idle_since = None
        elif slot.idle_since is None:
            slot.idle_since = now

    def _down(self, slot: Slot, why: str, now: float) -> None:
        if slot.healthy or slot.down_at is None:
            log.warning("fleet: %s down (%s): no new robots until it answers again", slot.name, why)
            self.events.append((time.time(), f"{slot.name} down: {why}"))
        slot.healthy = False
        if slot.down_at is None:
            slot.down_at = now

    def autoscale(self, now: float) -> None:
        """One autoscaling decision from the reports so far (see the module docstring)."""
        cfg = self.config
        lo, hi = cfg.bounds
        with self._lock:
            for q in [self._waits] + [s.waits for s in self.slots]:
                while q and now - q[0][0] > cfg.scale_window_s:
                    q.popleft()
            p95 = _p95([w for _, w in self._waits])
            for slot in [s for s in self.slots if s.draining]:
                st = slot.stats
                # unheard this long, no robot is left (a live link heartbeats): sessions still open there are
                # orphans (robots that finished on the edge while it was frozen), not work to wait for
                if st.get("draining") and not st["queued"] and st["quiet_s"] >= GONE_S:
                    self._remove(slot, "drained")
                elif now - slot.drained_at > cfg.drain_timeout_s:
                    self._remove(slot, f"drain timeout ({cfg.drain_timeout_s:g} s)")
            active = [s for s in self.slots if not s.draining]
            if p95 > cfg.scale_up_wait_s and len(active) < hi and all(s.healthy for s in active):
                log.info("fleet: p95 queue wait %.3f s > %.3f s: adding a replica", p95, cfg.scale_up_wait_s)
                self._add()
                self._waits.clear()
            elif len(active) > lo and p95 <= cfg.scale_up_wait_s / 2:
                idle = [s for s in active if s.healthy and s.idle_since is not None
                        and now - s.idle_since >= cfg.scale_down_idle_s]
                if idle:
                    self._drain(min(idle, key=lambda s: s.idle_since), now)


def _join(address: str | None) -> None:
    """Join (or start) the Ray cluster, keeping this process's SIGTERM handler: Ray's own exits at
    once (code 15), so a node's `close()` (its replicas killed, its last diagnostics) would never run."""
    previous = signal.getsignal(signal.SIGTERM)
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    if threading.current_thread() is threading.main_thread() and previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def _absolute(params: dict) -> dict:
    """Paths made absolute here: a replica's worker runs in a directory of Ray's choosing."""
    out = dict(params)
    for key in ("target_dir", "exits_dir", "target_profile", "server_secret_key", "authorized_clients_dir"):
        v = out.get(key)
        if isinstance(v, str) and v and Path(v).exists():
            out[key] = str(Path(v).resolve())
    return out
