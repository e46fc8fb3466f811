"""`bench fleet`: rounds per second of a verifier fleet on Ray as replicas and robots grow, the
per-round overhead its front adds, and the recovery after a replica is killed.

Each configuration starts a fleet (`fleet.front.open_fleet`) of N replicas of the target, their
passes padded to a timing profile (`--regime`; the timings are EMULATED), and R robots, each a
thread with its own real `ZmqLink` to the front: PREFILL, then DRAFT rounds of `gamma` random
tokens without early exits, each waiting for its FINAL, a fresh session every 128 tokens. The
robots draft nothing (no draft model runs), so this CPU serves only the sockets and the padded
passes: a round's time is the replica's queue plus its paced pass, as on GPUs sized like the
profile. The window opens `warmup_s` after every robot has had its first round (prefills are not
batched: 64 robots' prefills take a minute on one paced replica), and the rounds finished in it give
rounds per second and the 95th percentile of the round time.

Front overhead: the front only names a replica at HELLO, so a round's path is the one-process
verifier's; it is measured anyway, as the median (round wall time - FINAL's compute time) of one
robot through a 1-replica fleet minus the same against one `spec-edge-cloud verifier` process, both
unpaced on loopback, rounds alternating between the two.

Recovery (`--kill`): once more at the most replicas and robots, one replica's actor killed a third
of the way into the measured window; the time until Ray's restart of it serves again is recorded.
"""
from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from pathlib import Path

from ..decoding.messages import DraftRequest, End, Error, Final, Start
from ..transport.client import LinkOptions, ZmqLink, connect

SESSION_TOKENS = 128   # a robot starts a fresh session when its sequence reaches this many tokens


class BenchRobot:
    """One robot's rounds through its own link, until `stop` is set."""

    def __init__(self, endpoint: str, fingerprint: str, gamma: int, seed: int, name: str):
        self.link: ZmqLink = connect(endpoint, fingerprint, LinkOptions(handshake_timeout_s=120.0, name=name))
        self.gamma, self.rng = gamma, random.Random(seed)
        self.rounds: list[tuple[float, float, float]] = []   # (finished at, wall s, compute s)
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        vocab = self.link.welcome.vocab
        while not self.stop.is_set():
            if not self.link.wait_up(1.0):
                continue
            sid = uuid.uuid4().hex[:12]
            base = 8
            self.link.send(Start(sid, [self.rng.randrange(vocab) for _ in range(base)]))
            rnd = 0
            while base + self.gamma + 1 < SESSION_TOKENS and not self.stop.is_set():
                tokens = [self.rng.randrange(vocab) for _ in range(self.gamma)]
                sent = time.perf_counter()
                self.link.send(DraftRequest(sid, rnd, base, tokens, exit_layers=[]))
                final = self._final(sid, rnd)
                if final is None:
                    break
                now = time.perf_counter()
                self.rounds.append((now, now - sent, final.compute_s))
                base += final.accepted + 1
                rnd += 1
            self.link.send(End(sid))

    def _final(self, sid: str, rnd: int, timeout: float = 60.0) -> Final | None:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            msg = self.link.recv(min(1.0, deadline - time.monotonic()))
            if msg is None and not self.link.is_up:
                self.errors["link down"] = self.errors.get("link down", 0) + 1
                return None
            if isinstance(msg, Final) and msg.session == sid and msg.round == rnd:
                return msg
            if isinstance(msg, Error) and msg.session == sid:
                self.errors[msg.code] = self.errors.get(msg.code, 0) + 1
                return None
        return None


def _p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))] if values else float("nan")


def measure(endpoint: str, fingerprint: str, robots: int, seconds: float, warmup_s: float, gamma: int,
            seed: int, during=None) -> dict:
    """`robots` robots; the rounds finished in `seconds`, from `warmup_s` after each has had a round."""
    bots = [BenchRobot(endpoint, fingerprint, gamma, seed * 1000 + i, f"bench-{i}") for i in range(robots)]
    threads = [threading.Thread(target=b.run, daemon=True) for b in bots]
    for t in threads:
        t.start()
    limit = time.monotonic() + 600
    while not all(b.rounds for b in bots) and time.monotonic() < limit:
        time.sleep(0.1)
    start = time.perf_counter()
    if during is not None:
        during(start)
    time.sleep(max(0.0, start + warmup_s + seconds - time.perf_counter()))
    end = time.perf_counter()
    for b in bots:
        b.stop.set()
    for t in threads:
        t.join(70)
    for b in bots:
        b.link.close()
    window = [(w, c) for b in bots for at, w, c in b.rounds if start + warmup_s <= at <= end]
    errors: dict[str, int] = {}
    for b in bots:
        for k, v in b.errors.items():
            errors[k] = errors.get(k, 0) + v
    walls = [w for w, _ in window]
    return {"robots": robots, "rounds": len(window), "rounds_per_s": len(window) / seconds,
            "p95_round_s": _p95(walls), "median_round_s": statistics.median(walls) if walls else float("nan"),
            "median_compute_s": statistics.median([c for _, c in window]) if window else float("nan"),
            "errors": errors}


def overhead_ms(endpoint: str, fingerprint: str, rounds: int, gamma: int, seed: int) -> list[float]:
    """Per-round overheads (wall - compute, ms) of one robot against `endpoint`, unpaced."""
    bot = BenchRobot(endpoint, fingerprint, gamma, seed, "bench-overhead")
    thread = threading.Thread(target=bot.run, daemon=True)
    thread.start()
    while len(bot.rounds) < rounds and thread.is_alive():
        time.sleep(0.05)
    bot.stop.set()
    thread.join(70)
    bot.link.close()
    return [(w - c) * 1000 for _, w, c in bot.rounds[:rounds]]


def run_fleet_bench(target: Path, replicas: list[int], robots: list[int], regime: str, seconds: float,
                    warmup_s: float, gamma: int, max_batch: int, overhead_rounds: int, kill: bool, ray_address: str,
                    replica_num_cpus: float, seed: int = 0, log=print) -> dict:
    import ray

    from ..bench.bridge import ServerProcess
    from ..fleet.config import FleetConfig
    from ..fleet.front import open_fleet
    from ..modeling.bundle import load_bundle

    fingerprint = load_bundle(target).tokenizer_fingerprint()
    model = {"target_dir": str(target), "target_profile": "" if regime == "native" else regime}
    server = {"bind": "tcp://127.0.0.1:0", "log_rounds": False, "max_batch": max_batch, "max_sessions": 256,
              "max_sessions_per_client": 4, "idle_timeout_s": 600.0}
    if not ray.is_initialized():
        ray.init(address=None if ray_address == "local" else ray_address, include_dashboard=False,
                 log_to_driver=False)
    result = {"kind": "fleet", "target": str(target), "regime": regime, "emulated": regime != "native",
              "gamma": gamma, "max_batch": max_batch, "seconds": seconds, "warmup_s": warmup_s, "runs": []}

    def fleet_of(n: int, paced: bool):
        cfg = FleetConfig(replicas=n, replica_num_cpus=replica_num_cpus)
        return open_fleet(cfg, model if paced else {**model, "target_profile": ""}, server)

    # the front's overhead: a 1-replica fleet against one verifier process, both unpaced, alternating
    log("front overhead: one robot, one verifier process against a 1-replica fleet (unpaced)")
    single = ServerProcess("verifier", ["verifier", "--target", str(target), "--bind", "tcp://127.0.0.1:0",
                                        "--quiet-rounds", "--log-level", "WARNING", "--max-batch", str(max_batch)], 1)
    front, pool = fleet_of(1, paced=False)
    try:
        single.wait_ready(300)
        base, via = [], []
        for _ in range(3):
            base += overhead_ms(single.endpoint, fingerprint, overhead_rounds // 3, gamma, seed)
            via += overhead_ms(front.endpoint, fingerprint, overhead_rounds // 3, gamma, seed)
    finally:
        single.stop()
        front.stop()
        pool.close()
    result["overhead"] = {"single_ms": statistics.median(base), "fleet_ms": statistics.median(via),
                          "front_ms": statistics.median(via) - statistics.median(base), "rounds": len(via)}
    log(f"  median overhead per round: one process {result['overhead']['single_ms']:.3f} ms, through the fleet "
        f"{result['overhead']['fleet_ms']:.3f} ms: the front adds {result['overhead']['front_ms']:+.3f} ms")

    for n in replicas:
        front, pool = fleet_of(n, paced=True)
        try:
            plan = [(r, False) for r in robots]
            if kill and n == max(replicas) and n > 1:  # and once more, a replica killed a third of the way in
                plan.append((max(robots), True))
            for r, killed in plan:
                during = _killer(pool, warmup_s + seconds / 3, result) if killed else None
                before = _passes(pool)
                m = measure(front.endpoint, fingerprint, r, seconds, warmup_s, gamma, seed, during)
                after = _passes(pool)
                passes = sum(after[k][0] - before.get(k, (0, 0))[0] for k in after)
                rows = sum(after[k][1] - before.get(k, (0, 0))[1] for k in after)
                if killed:  # the run is over; the replica may still be restarting
                    during.thread.join(600)
                m.update(replicas=n, front_overhead_ms=result["overhead"]["front_ms"],
                         rows_per_pass=rows / passes if passes else 0.0, killed=killed)
                result["runs"].append(m)
                log(f"  {n} replicas, {r:3d} robots: {m['rounds_per_s']:6.2f} rounds/s, p95 round "
                    f"{m['p95_round_s']:.3f} s, median {m['median_round_s']:.3f} s (compute {m['median_compute_s']:.3f}"
                    f" s), {m['rows_per_pass']:.1f} rows/pass{', a replica killed' if during else ''}"
                    f"{', errors ' + str(m['errors']) if m['errors'] else ''}")
        finally:
            front.stop()
            pool.close()
    _efficiency(result["runs"])
    return result


def _passes(pool) -> dict:
    """(passes, rows) each replica has run so far (a restarted one counts from its restart)."""
    pool.poll()
    return {s.endpoint: (s.stats.get("passes", 0), s.stats.get("passes", 0) * s.stats.get("rows_per_pass", 0.0))
            for s in pool.slots}


def _killer(pool, after_s: float, result: dict):
    """Kill one replica `after_s` into the run; record how long until Ray's restart serves again."""
    def during(start: float) -> None:
        def go() -> None:
            time.sleep(max(0.0, start + after_s - time.perf_counter()))
            name = pool.slots[0].name
            before = len(pool.recoveries)
            t0 = time.monotonic()
            pool.kill(name)
            while len(pool.recoveries) == before and time.monotonic() - t0 < 600:
                time.sleep(0.05)
            result["recovery"] = {"replica": name, "back_after_kill_s": time.monotonic() - t0,
                                  "down_to_serving_s": pool.recoveries[-1] if len(pool.recoveries) > before else None}
        during.thread = threading.Thread(target=go, daemon=True)
        during.thread.start()
    return during


def _efficiency(runs: list[dict]) -> None:
    """scaling_efficiency = rounds/s with N replicas / (N x rounds/s with the fewest), same robots."""
    for run in runs:
        ones = [r for r in runs if r["robots"] == run["robots"] and not r["killed"]]
        if not ones:
            continue
        low = min(ones, key=lambda r: r["replicas"])
        if low["rounds_per_s"] > 0:
            run["scaling_efficiency"] = (run["rounds_per_s"] / low["rounds_per_s"]) * low["replicas"] / run["replicas"]


def table(result: dict) -> str:
    lines = [f"bench fleet: target {result['target']}, regime {result['regime']}"
             f"{' (EMULATED: passes padded to the profile)' if result['emulated'] else ''}, gamma {result['gamma']}, "
             f"max_batch {result['max_batch']}, {result['seconds']:g} s measured per run",
             "| replicas | robots | rounds/s | p95 round s | median round s | rows/pass | scaling efficiency |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["runs"]:
        eff = r.get("scaling_efficiency")
        lines.append(f"| {r['replicas']} | {r['robots']} | {r['rounds_per_s']:.2f} | {r['p95_round_s']:.3f} | "
                     f"{r['median_round_s']:.3f} | {r['rows_per_pass']:.2f} | "
                     f"{'' if eff is None else f'{eff:.2f}'}{' (a replica killed)' if r['killed'] else ''} |")
    o = result["overhead"]
    lines.append(f"front overhead per round (median, unpaced, {o['rounds']} rounds each): one process "
                 f"{o['single_ms']:.3f} ms, through the fleet {o['fleet_ms']:.3f} ms: {o['front_ms']:+.3f} ms")
    if "recovery" in result:
        rec = result["recovery"]
        down = rec["down_to_serving_s"]
        lines.append(f"replica killed: back serving {rec['back_after_kill_s']:.1f} s after the kill"
                     + (f" (found down to serving again: {down:.1f} s)" if down is not None else " (never came back)"))
    return "\n".join(lines)
