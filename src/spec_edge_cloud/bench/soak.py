"""`bench soak`: robots decoding for an hour against a cloud that restarts, through a link that breaks.

    spec-edge-cloud bench soak --minutes 60 --robots 8 --regime go2-orin-a100 [--json FILE]

The real path, paced: a `spec-edge-cloud verifier` process serves the target with its exits, every
pass padded to the regime's timing profile (`--target-profile`); between it and the robots, the
link emulator (transport/emulator.py, in this process) with the regime's round trip and jitter.
Each robot is a thread of this process with its own draft, `ZmqLink`, `SpecClient` and draft pacer,
answering the frames and instructions of a bag one after another in one greedy mode (robot i takes
the i-th of `--modes`, in turn). Paced, this CPU does a small part of the work the profile's times
allow: the verifier's `pacer_late_s` and the robots' say how much real compute ran past them, so
the figures are the protocol's and the code's, not this machine's.

Faults come on a schedule of `--cycles` equal cycles; in each (as fractions of a cycle):

    0.05        the verifier restarted: stopped (SIGTERM) or killed (SIGKILL), in turn, and started
                again on the same port (not in the first cycle)
    0.40-0.50   the link degraded: 30% of messages lost, 500 ms of jitter
    0.60        every connection cut (the radio link lost and found again at once)
    0.70        the link down: connections cut and refused for a tenth of a cycle (at most 20 s)
    0.85-1      quiet

Measured: the RSS and open descriptors of the robots' process and of the verifier every `--sample-s`
seconds, with the verifier's counters (`kill -USR1`: sessions, connections); every response:
verified or not and why, and whether a verified answer equals the target alone (Hugging Face's
greedy `generate()`, once per frame). At the end, the robots' links closed, the sessions the
verifier still holds.

Checks (`checks` in the result; any failed one makes the command exit 1):
- lossless: no verified answer differs from the target's;
- explained: every response not verified, and every ERROR a robot got, overlaps a fault window
  (from the fault's start to its end plus the client's deadline and the link's dead time);
- sessions: none left open at the end;
- flat: after the first cycle (the warm-up), the robots' process ends every cycle within 5% of its
  RSS at the end of the first, with no more descriptors; each verifier ends its cycle within 5% of
  its RSS at 0.3 of that cycle (and at least 0.2 of a cycle after it was ready: its own warm-up),
  with no more descriptors.
"""
from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ..control.actions import forced_next
from ..decoding.client import SpecClient
from ..decoding.modes import GREEDY_LOSSLESS, DecodeConfig
from ..decoding.timing import Pacer
from ..modeling import jpeg
from ..modeling.bundle import load_bundle
from ..training.spec_eval import target_greedy
from ..transport.client import LinkOptions, ZmqLink, connect
from ..transport.emulator import LinkEmulator, LinkSpec
from ..transport.server import STATS_LINE
from .bags import read_frames
from .bridge import BridgeError, ServerProcess
from .regimes import load_regime

FLAT = 0.05          # RSS growth allowed after warm-up
LOSSY = (0.3, 0.5)   # loss and jitter (s) of the degraded link
# fault kinds, in the order of a cycle: (start, end) as fractions of a cycle
PHASES = {"restart": (0.05, 0.05), "lossy": (0.40, 0.50), "cut": (0.60, 0.60), "down": (0.70, 0.80)}
EARLY, LATE = 0.30, 0.98  # where in a cycle the checkpoints are sampled
WARMUP = 0.2              # and the early one no sooner than this part of a cycle after the verifier was ready


@dataclass
class SoakConfig:
    minutes: float = 60.0
    robots: int = 8
    regime: str = "go2-orin-a100"
    cycles: int = 6
    bag: Path = Path("data/bags/sim_small")
    draft: Path = Path("models/draft")
    target: Path = Path("models/target")
    exits: Path | None = None
    modes: tuple[str, ...] = ("spec-ee-pre", "spec-ee", "spec", "adaptive", "cloud")
    max_new_tokens: int = 16
    sample_s: float = 30.0
    idle_timeout_s: float = 120.0   # the verifier's (its default): sessions of a link that reconnected expire then
    seed: int = 0
    work: Path = Path("runs/soak")

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in GREEDY_LOSSLESS]
        if bad or not self.modes:
            raise ValueError(f"soak modes must be greedy modes the target alone can check ({', '.join(GREEDY_LOSSLESS)}),"
                             f" got {list(self.modes)}")
        if self.minutes <= 0 or self.robots < 1 or self.cycles < 1 or self.sample_s <= 0:
            raise ValueError("--minutes, --robots, --cycles and --sample-s must be positive")
        if self.minutes * 60 / self.cycles < 30:
            raise ValueError(f"cycles of {self.minutes * 60 / self.cycles:.0f} s are too short for a restart and its "
                             "recovery: at least 30 s each (fewer --cycles)")


@dataclass
class Fault:
    kind: str           # restart | crash | lossy | cut | down
    start: float        # seconds since the soak began
    end: float          # when it was over (a restarted verifier: when it was ready again)


@dataclass
class Record:
    robot: int
    mode: str
    frame: int
    start: float
    end: float
    verified: bool
    reason: str | None = None       # why not verified: the client's fallback reason (an ERROR's text too)
    equal: bool | None = None       # a verified answer equal to the target alone's
    tokens: int = 0
    explained_by: str | None = None  # the latest fault whose window it overlaps (None: clear of faults)


@dataclass
class Sample:
    t: float
    cycle: int
    robots_rss_mb: float
    robots_fds: int
    verifier_pid: int
    verifier_rss_mb: float | None
    verifier_fds: int | None
    verifier: dict = field(default_factory=dict)   # its stats line (sessions, connections, counters)


def reason_kind(reason: str | None) -> str | None:
    """A fallback reason without its details ("cloud refused: bad-request: ..." -> "cloud refused:
    bad-request"), so the summary counts kinds, not texts."""
    return None if reason is None else ": ".join(reason.split(": ")[:2])


def proc_usage(pid: int) -> tuple[float, int] | tuple[None, None]:
    """(RSS in MB, open descriptors) of a process, from /proc; (None, None) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
        return round(rss, 1), len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, AttributeError):
        return None, None


class Verifier:
    """The verifier process, restartable on one port, with its stats on demand (SIGUSR1)."""

    def __init__(self, args: list[str]):
        self.args = args
        self.port = 0
        self.proc: ServerProcess | None = None
        self._stats: queue.Queue = queue.Queue()
        self._asking = threading.Lock()
        self.ready = False

    def start(self, timeout: float = 180.0) -> str:
        bind = f"tcp://127.0.0.1:{self.port}"
        self.proc = ServerProcess("verifier", [*self.args, "--bind", bind], threads=1, on_line=self._line)
        endpoint = self.proc.wait_ready(timeout)
        self.ready = True  # SIGUSR1 before its handler is installed would end the process
        self.port = int(endpoint.rsplit(":", 1)[1])
        return endpoint

    def _line(self, line: str) -> None:
        if line.startswith(STATS_LINE):
            self._stats.put(json.loads(line[len(STATS_LINE):]))

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def stats(self, timeout: float = 5.0) -> dict:
        """The running verifier's counters ({} if it does not answer in time)."""
        with self._asking:
            if not self.ready:
                return {}
            while not self._stats.empty():
                self._stats.get_nowait()
            try:
                os.kill(self.pid, signal.SIGUSR1)
                return self._stats.get(timeout=timeout)
            except (OSError, queue.Empty):
                return {}

    def stop(self, crash: bool = False) -> None:
        with self._asking:
            self.ready = False
        if crash and self.proc.proc.poll() is None:
            self.proc.proc.kill()
            self.proc.proc.wait(10)
        self.proc.stop()


class Soak:
    def __init__(self, cfg: SoakConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.duration = cfg.minutes * 60
        self.cycle_s = self.duration / cfg.cycles
        self.profile = load_regime(cfg.regime)
        self.decode = DecodeConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        self.records: list[Record] = []
        self.samples: list[Sample] = []
        self.checkpoints: dict[str, Sample] = {}
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.pacers: list[Pacer | None] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.t0 = 0.0
        self.ready_at = 0.0   # when the verifier was last ready (seconds since the soak began)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        torch.set_num_threads(1)
        frames = read_frames(cfg.bag)
        target = load_bundle(cfg.target)
        prompts, references = [], []
        for f in frames:  # what a robot sends (the JPEG the cloud decodes) and what the target alone answers
            pixels, data = jpeg.roundtrip(f.image)
            prompts.append((f.instruction, pixels, data))
            references.append(target_greedy(target, target.encode(f.instruction, pixels), cfg.max_new_tokens))
        del target
        args = ["verifier", "--target", str(cfg.target), "--quiet-rounds", "--log-level", "WARNING",
                "--idle-timeout", f"{cfg.idle_timeout_s:g}"]
        if cfg.exits is not None:
            args += ["--exits", str(cfg.exits)]
        if self.profile is not None:
            args += ["--target-profile", str(self.profile.save(cfg.work / f"profile-{self.profile.name}.json"))]
        verifier = Verifier(args)
        cloud = verifier.start()
        p = self.profile
        spec = LinkSpec((p.rtt_ms or 0) / 1000, p.jitter_ms / 1000) if p else LinkSpec()
        self.base_spec = spec
        emulator = LinkEmulator("tcp://127.0.0.1:0", cloud, LinkSpec(spec.rtt_s, spec.jitter_s), seed=cfg.seed).start()
        self.log(f"soak: {cfg.robots} robots ({', '.join(cfg.modes)}), {cfg.minutes:g} min in {cfg.cycles} cycles of "
                 f"{self.cycle_s:.0f} s, regime {cfg.regime}, verifier {cloud} behind the emulator {emulator.endpoint}")
        robots = [self._robot(i, emulator.endpoint, prompts, references) for i in range(cfg.robots)]
        threads = [threading.Thread(target=r, name=f"robot-{i}", daemon=True) for i, r in enumerate(robots)]
        self.t0 = time.monotonic()
        for t in threads:
            t.start()
        sampler = threading.Thread(target=self._sampler, args=(verifier,), daemon=True, name="sampler")
        sampler.start()
        try:
            self._schedule(verifier, emulator)
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=120)
            sampler.join(timeout=30)
            time.sleep(2.0)  # the ENDs of the last responses reach the cloud
            closed = self._sample(verifier, verifier.stats())
            end = closed  # then the sessions of links that reconnected expire (idle_timeout_s)
            while end.verifier.get("sessions") and end.t < closed.t + cfg.idle_timeout_s + 5:
                time.sleep(1.0)
                end = self._sample(verifier, verifier.stats())
            verifier.stop()
            emulator.stop()
        return self._result(closed, end, [t.name for t in threads if t.is_alive()])

    def _schedule(self, verifier: Verifier, emulator: LinkEmulator) -> None:
        """Faults and checkpoints at their times, in order."""
        events = []
        for c in range(self.cfg.cycles):
            base = c * self.cycle_s
            if c > 0:
                events.append((base + PHASES["restart"][0] * self.cycle_s, "crash" if c % 2 == 0 else "restart", c))
            for kind in ("lossy", "cut", "down"):
                events.append((base + PHASES[kind][0] * self.cycle_s, kind, c))
            events.append((base + EARLY * self.cycle_s, "early", c))
            events.append((base + LATE * self.cycle_s, "late", c))
        for at, kind, c in sorted(events):
            while not self._stop.is_set() and self.now() < at:
                time.sleep(min(0.2, at - self.now()))
            if kind == "early":  # the verifier warmed up: a fifth of a cycle after it was ready
                while not self._stop.is_set() and self.now() < self.ready_at + WARMUP * self.cycle_s:
                    time.sleep(0.2)
            if kind in ("early", "late"):
                self.checkpoints[f"{kind}-{c}"] = self._sample(verifier, verifier.stats())
                continue
            if self.now() >= self.duration:  # pushed past the end by a slow restart
                continue
            start = self.now()
            if kind in ("restart", "crash"):
                verifier.stop(crash=kind == "crash")
                verifier.start()
                end = self.ready_at = self.now()
            elif kind == "lossy":
                emulator.impair(self.base_spec.rtt_s, self.base_spec.jitter_s + LOSSY[1], LOSSY[0])
                time.sleep((PHASES["lossy"][1] - PHASES["lossy"][0]) * self.cycle_s)
                emulator.impair(self.base_spec.rtt_s, self.base_spec.jitter_s, 0.0)
                end = self.now()
            elif kind == "cut":
                emulator.cut()
                end = start
            else:
                down = min((PHASES["down"][1] - PHASES["down"][0]) * self.cycle_s, 20.0)
                emulator.cut(down)
                end = start + down
            self.faults.append(Fault(kind, round(start, 2), round(end, 2)))
            self.log(f"[{start:7.1f} s] cycle {c}: {kind} (until {end:.1f} s)")
        while self.now() < self.duration:
            time.sleep(0.2)

    def _robot(self, index: int, endpoint: str, prompts: list, references: list) -> Callable[[], None]:
        cfg = self.cfg
        mode = cfg.modes[index % len(cfg.modes)]

        def run() -> None:
            draft = load_bundle(cfg.draft)
            link: ZmqLink = connect(endpoint, draft.tokenizer_fingerprint(),
                                    LinkOptions(handshake_timeout_s=60, name=f"soak-robot-{index}"))
            pacer = Pacer(self.profile) if self.profile else None
            client = SpecClient(draft, link, replace(self.decode, mode=mode), pacer=pacer, grammar=forced_next)
            self.pacers.append(pacer)
            order = list(range(len(prompts)))
            random.Random(cfg.seed + index).shuffle(order)
            i = 0
            try:
                while not self._stop.is_set():
                    frame = order[i % len(order)]
                    i += 1
                    start = self.now()
                    resp = client.generate(draft.encode(*prompts[frame]))
                    rec = Record(index, mode, frame, round(start, 2), round(self.now(), 2), resp.verified,
                                 resp.metrics.fallback_reason, None, len(resp.tokens))
                    if resp.verified:
                        rec.equal = resp.tokens == references[frame]
                    with self._lock:
                        self.records.append(rec)
            except Exception as exc:  # a defect: recorded, and this robot stops
                with self._lock:
                    self.errors.append(f"robot {index}: {type(exc).__name__}: {exc}")
            finally:
                link.close()
        return run

    def _sampler(self, verifier: Verifier) -> None:
        while not self._stop.wait(self.cfg.sample_s):
            self.samples.append(self._sample(verifier, verifier.stats()))

    def _sample(self, verifier: Verifier, stats: dict) -> Sample:
        rss, fds = proc_usage(os.getpid())
        vrss, vfds = proc_usage(verifier.pid)
        now = self.now()
        return Sample(round(now, 1), min(int(now // self.cycle_s), self.cfg.cycles - 1), rss, fds, verifier.pid,
                      vrss, vfds, stats)

    # -- the verdict -----------------------------------------------------------------------------
    def _windows(self) -> list[tuple[str, float, float]]:
        """When a fault may explain a response that was not verified: from its start to its end plus
        the client's deadline, the link's dead time and a reconnection (its longest handshake timer)."""
        opt = LinkOptions()
        slack = self.decode.deadline_s + opt.dead_after_s + opt.max_reconnect_s + 2.0
        return [(f.kind, f.start, f.end + slack) for f in self.faults]

    def _result(self, closed: Sample, end: Sample, stuck: list[str]) -> dict:
        cfg = self.cfg
        windows = self._windows()
        for r in self.records:  # the latest fault window that overlaps it (verified ones too, for the figures)
            r.explained_by = next((k for k, a, b in reversed(windows) if r.start <= b and r.end >= a), None)
        calm = [r for r in self.records if r.explained_by is None]
        verified = [r for r in self.records if r.verified]
        unverified = [r for r in self.records if not r.verified]
        flat = self._flat()
        checks = {
            "lossless": not any(r.equal is False for r in verified),
            "explained": all(r.explained_by for r in unverified) and not self.errors and not stuck,
            "sessions": end.verifier.get("sessions") == 0,
            "flat": all(v["ok"] for v in flat.values()),
        }
        late = [round(p.late_s, 2) for p in self.pacers if p is not None]
        return {
            "kind": "soak", "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "emulated": self.profile is not None,
            "responses": len(self.records), "verified": len(verified),
            "verified_equal": sum(bool(r.equal) for r in verified),
            "verified_different": sum(r.equal is False for r in verified),
            "clear_of_faults": {"responses": len(calm), "verified": sum(r.verified for r in calm)},
            "not_verified": dict(Counter(f"{reason_kind(r.reason)} ({r.explained_by or 'UNEXPLAINED'})"
                                         for r in unverified)),
            "by_mode": {m: {"responses": sum(r.mode == m for r in self.records),
                            "verified": sum(r.mode == m and r.verified for r in self.records)} for m in cfg.modes},
            "faults": [asdict(f) for f in self.faults],
            "sessions_at_close": closed.verifier.get("sessions"), "sessions_at_end": end.verifier.get("sessions"),
            "seconds_to_no_session": round(end.t - closed.t, 1), "verifier_at_end": end.verifier,
            "pacing": {"robot_draft_late_s": late, "verifier_late_s": end.verifier.get("pacer_late_s")},
            "flat": flat, "checks": checks, "ok": all(checks.values()), "errors": self.errors + stuck,
            "samples": [asdict(s) for s in self.samples],
            "checkpoints": {k: asdict(s) for k, s in self.checkpoints.items()},
            "records": [asdict(r) for r in self.records],
        }

    def _flat(self) -> dict:
        """RSS and descriptors after warm-up: the robots' process over the run, each verifier over its cycle."""
        out = {}
        cp = self.checkpoints
        first = cp.get("late-0")
        for c in range(1, self.cfg.cycles):
            last = cp.get(f"late-{c}")
            if first is None or last is None:
                continue
            growth = last.robots_rss_mb / first.robots_rss_mb - 1
            out[f"robots cycle {c}"] = {"rss_mb": [first.robots_rss_mb, last.robots_rss_mb], "growth": round(growth, 4),
                                        "fds": [first.robots_fds, last.robots_fds],
                                        "ok": growth <= FLAT and last.robots_fds <= first.robots_fds}
        for c in range(self.cfg.cycles):
            a, b = cp.get(f"early-{c}"), cp.get(f"late-{c}")
            if a is None or b is None or a.verifier_pid != b.verifier_pid or a.verifier_rss_mb is None \
                    or b.verifier_rss_mb is None:
                continue
            growth = b.verifier_rss_mb / a.verifier_rss_mb - 1
            out[f"verifier cycle {c}"] = {"rss_mb": [a.verifier_rss_mb, b.verifier_rss_mb], "growth": round(growth, 4),
                                          "fds": [a.verifier_fds, b.verifier_fds],
                                          "ok": growth <= FLAT and b.verifier_fds <= a.verifier_fds}
        return out


def summary(result: dict) -> str:
    """The figures a reader wants, as text."""
    c = result["config"]
    lines = [f"soak: {c['robots']} robots, {c['minutes']:g} min, regime {c['regime']}"
             f"{' (EMULATED timings)' if result['emulated'] else ''}, {len(result['faults'])} faults",
             f"responses {result['responses']}: verified {result['verified']} (equal to the target alone "
             f"{result['verified_equal']}, different {result['verified_different']})",
             f"clear of every fault window: {result['clear_of_faults']['responses']} responses, "
             f"{result['clear_of_faults']['verified']} verified",
             f"not verified: {result['not_verified'] or '-'}",
             f"faults: {dict(Counter(f['kind'] for f in result['faults']))}",
             f"sessions open when the robots had closed: {result['sessions_at_close']}, at the end: "
             f"{result['sessions_at_end']} ({result['seconds_to_no_session']} s later)",
             f"pacing: robots' drafts late {result['pacing']['robot_draft_late_s']} s, verifier late "
             f"{result['pacing']['verifier_late_s']} s"]
    cp = result["checkpoints"]
    lines.append("cycle | responses started | verified | robots RSS MB, fds (end) | verifier RSS MB, fds (0.3 -> end) "
                 "| verifier sessions, connections (end)")
    for k in range(c["cycles"]):
        start, end = k * c["minutes"] * 60 / c["cycles"], (k + 1) * c["minutes"] * 60 / c["cycles"]
        mine = [r for r in result["records"] if start <= r["start"] < end]
        early, late = cp.get(f"early-{k}", {}), cp.get(f"late-{k}", {})
        lines.append(f"{k} | {len(mine)} | {sum(r['verified'] for r in mine)} | {late.get('robots_rss_mb')}, "
                     f"{late.get('robots_fds')} | {early.get('verifier_rss_mb')} -> {late.get('verifier_rss_mb')}, "
                     f"{early.get('verifier_fds')} -> {late.get('verifier_fds')} | "
                     f"{late.get('verifier', {}).get('sessions')}, {late.get('verifier', {}).get('connections')}")
    for name, v in result["flat"].items():
        lines.append(f"{name}: RSS {v['rss_mb'][0]} -> {v['rss_mb'][1]} MB ({v['growth']:+.1%}), "
                     f"descriptors {v['fds'][0]} -> {v['fds'][1]}{'' if v['ok'] else '  NOT FLAT'}")
    lines.append("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items()))
    if result["errors"]:
        lines.append(f"errors: {result['errors']}")
    return "\n".join(lines)


def run_soak(cfg: SoakConfig, log: Callable[[str], None] = print) -> dict:
    try:
        return Soak(cfg, log).run()
    except BridgeError as exc:
        raise ValueError(str(exc)) from None
