"""Cost of the ZeroMQ bridge: overhead per round beyond compute, and round latency with 1..16 robots,
with and without batching several robots' rounds into one pass.

    .venv/bin/python benchmarks/bench_bridge.py [--rounds 300] [--robots 1,4,16] [--hidden 64 --layers 4]
    .venv/bin/python benchmarks/bench_bridge.py --regime go2-orin-a100   # EMULATED regime, see below
    .venv/bin/python benchmarks/bench_bridge.py --breakdown [--rounds 500]  # where one robot's round goes

A verifier process (the real `spec-edge-cloud verifier`, plaintext on loopback, no emulated delay,
one torch thread) serves a tiny random Llama target. Each robot is its own process with a real
`ZmqLink`: it sends DRAFT rounds of 4 tokens and waits for each FINAL, restarting its session
every 50 rounds. Overhead = the robot's wall time from `send(DRAFT)` to `recv() -> FINAL` minus the
pass's compute time that FINAL reports (so it includes both sockets, both I/O threads, the
server's decoding, checks and fair scheduler, and the service's bookkeeping around the pass). The
same rounds through the in-process link (a thread, no sockets) give the baseline. The fleets of
several robots run twice: against the default server (rounds of up to `max_batch` = 8 robots that
are ready together share one padded forward pass) and against one started with `--max-batch 1`
(passes one at a time, interleaved fairly); "rows" is the mean number of robots per pass that the
FINALs report. The floor row is a bare pyzmq DEALER/ROUTER echo between two processes whose server
computes for the measured median compute time (a forward pass of the same target, then spinning):
what the machine's sockets, I/O threads and wake-ups cost with no project code at all. All on this
machine's 2 shared cores: robots and server compete. The two "one core" rows run the same robot and
echo with every thread of both processes on one CPU (the first this process may use): a thread that
wakes another on the other vCPU of a VM pays for an inter-processor interrupt and a descheduled
vCPU (tenths of a millisecond, depending on the host's load), so these rows show what the bridge
itself costs, without that.

`--breakdown` instead runs one robot against a verifier whose frame handler, pass and FINAL send are
timestamped, and prints the median of each stretch of a round: the robot's send, the wire each way,
the server's work before and after the pass, and the robot's work from the FINAL's frame to `recv()`.

`--regime PROFILE` instead runs whole responses through the real bridge in a regime that cannot run
here, with EMULATED timings: the verifier pads every pass to the profile (`--target-profile`), the
robot pads its drafting to it, and the link emulator adds the profile's round trip. The target is
a tiny Llama whose upper half is the identity (so its exit at half depth always agrees with the final
layer: pre-drafts hit, as with well-trained exits); the draft is a noisy copy (partial acceptance).
It prints time to complete per mode and the measured round and EARLY times against the profile's.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from spec_edge_cloud.decoding.messages import DraftRequest, End, Final, Start
from spec_edge_cloud.modeling.tiny import tiny_bundle

SESSION_ROUNDS, GAMMA, PROMPT = 50, 4, [2, 10, 11, 12, 13]


def robot(link, vocab: int, rounds: int, seed: int) -> list[tuple[float, float, int]]:
    """(round wall time, reported compute, robots sharing the pass) per round, through any Link."""
    rng = random.Random(seed)
    out = []
    session, base = None, 0
    for i in range(rounds):
        if i % SESSION_ROUNDS == 0:
            if session:
                link.send(End(session))
            session, base = f"r{seed}-{i}", len(PROMPT)
            link.send(Start(session, PROMPT))
        tokens = [rng.randrange(7, vocab) for _ in range(GAMMA)]
        t0 = time.perf_counter()
        link.send(DraftRequest(session, i, base, tokens, exit_layers=[]))
        while True:
            msg = link.recv(10.0)
            if msg is None:
                raise RuntimeError("no FINAL within 10 s")
            if isinstance(msg, Final) and msg.session == session and msg.round == i:
                break
        out.append((time.perf_counter() - t0, msg.compute_s, msg.rows))
        base += msg.accepted + 1
    link.send(End(session))
    return out


def robot_process(endpoint: str, tokenizer: str, vocab: int, rounds: int, seed: int, start, results,
                  cpus: set[int] | None = None) -> None:
    from spec_edge_cloud.transport.client import LinkOptions, connect
    if cpus:
        os.sched_setaffinity(0, cpus)  # before the link's threads start: they inherit it
    link = connect(endpoint, tokenizer, LinkOptions(name=f"bench-{seed}"))
    try:
        start.wait()
        results.put(robot(link, vocab, rounds, seed))
    finally:
        link.close()


def echo_server(endpoint: str, target_dir: Path, compute_s: float, cpus: set[int] | None) -> None:
    """A bare pyzmq ROUTER that answers each frame after at least `compute_s` of compute: a forward pass of
    the same target (which leaves the caches as cold as the verifier's pass does), then spinning to the
    time. The answer is the frame with its first 8 bytes replaced by the compute time it took (a
    double), as a FINAL reports its own: a pass longer than `compute_s` is not counted as overhead."""
    import torch
    import zmq

    from spec_edge_cloud.modeling.bundle import load_bundle
    if cpus:
        os.sched_setaffinity(0, cpus)
    torch.set_num_threads(1)
    model, ids = load_bundle(target_dir).model, torch.tensor([PROMPT])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        peer, data = sock.recv_multipart()
        if data == b"stop":
            break
        t0 = time.perf_counter()
        with torch.no_grad():
            model(ids)
        while time.perf_counter() - t0 < compute_s:
            pass
        sock.send_multipart([peer, struct.pack("<d", time.perf_counter() - t0) + data[8:]])
    sock.close(linger=0)
    ctx.term()


def bare_echo(target_dir: Path, compute_s: float, rounds: int,
              cpus: set[int] | None = None) -> list[tuple[float, float, int]]:
    """The floor on this machine: the same two-process round trip with no project code at all."""
    import zmq
    endpoint = "tcp://127.0.0.1:5989"
    server = mp.get_context("fork").Process(target=echo_server, args=(endpoint, target_dir, compute_s, cpus))
    server.start()
    everywhere = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)  # this thread, and the I/O thread of the context made next
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    frame = bytes(120)  # about a DRAFT of 4 tokens
    out = []
    for i in range(rounds + 30):
        t0 = time.perf_counter()
        sock.send(frame)
        (took,) = struct.unpack_from("<d", sock.recv())
        if i >= 30:
            out.append((time.perf_counter() - t0, took, 1))
    sock.send(b"stop")
    server.join(10)
    sock.close(linger=0)
    ctx.term()
    os.sched_setaffinity(0, everywhere)
    return out


def stamp(cls, name: str, stamps: dict, before: str = "", after: str = "",
          when: Callable[[tuple, object], bool] = lambda args, out: True) -> Callable[[], None]:
    """Wrap method `cls.name`: each call that `when(args, result)` accepts appends perf_counter() at its
    start to stamps[before] and at its end to stamps[after]. Returns what undoes the wrapping."""
    inner = getattr(cls, name)

    def wrapper(self, *args):
        t0 = time.perf_counter()
        out = inner(self, *args)
        t1 = time.perf_counter()
        if when(args, out):
            if before:
                stamps.setdefault(before, []).append(t0)
            if after:
                stamps.setdefault(after, []).append(t1)
        return out
    setattr(cls, name, wrapper)
    return lambda: setattr(cls, name, inner)


def breakdown_server(target_dir: Path, conn) -> None:
    """A verifier whose frame handler, pass and FINAL send are timestamped (class methods wrapped)."""
    import torch

    from spec_edge_cloud.decoding.target import TargetEngine
    from spec_edge_cloud.transport.server import ServerConfig, VerifierServer
    torch.set_num_threads(1)
    stamps: dict[str, list[float]] = {}
    stamp(VerifierServer, "_on_frame", stamps, before="frame")
    stamp(TargetEngine, "verify", stamps, before="pass", after="passed")
    stamp(VerifierServer, "_send", stamps, after="sent",
          when=lambda args, _: args[2] == "FINAL")  # _send(peer, st, kind, body)
    server = VerifierServer(TargetEngine.from_dir(target_dir, exit_layers=[1]),
                            ServerConfig(bind="tcp://127.0.0.1:0", log_rounds=False))
    conn.send(server.start())
    conn.recv()  # the robot is done
    server.stop()
    conn.send(stamps)


def breakdown(target_dir: Path, tokenizer: str, vocab: int, rounds: int) -> None:
    """Where one robot's round goes: timestamps on both sides (perf_counter is CLOCK_MONOTONIC, one clock
    for every process on Linux), each wrapped method adding about a microsecond."""
    from bisect import bisect_left

    from spec_edge_cloud.transport.client import ZmqLink, connect
    here, there = mp.get_context("fork").Pipe()
    server = mp.get_context("fork").Process(target=breakdown_server, args=(target_dir, there))
    server.start()
    stamps: dict[str, list[float]] = {}
    undo = [stamp(ZmqLink, "send", stamps, before="send", after="sent",
                  when=lambda args, _: isinstance(args[0], DraftRequest)),
            stamp(ZmqLink, "_incoming", stamps, before="frame"),
            stamp(ZmqLink, "recv", stamps, after="recv", when=lambda _, out: isinstance(out, Final))]
    try:
        link = connect(here.recv(), tokenizer)
        robot(link, vocab, 30 + rounds, 0)
        link.close()
    finally:
        for restore in undo:
            restore()
    here.send("done")
    far = here.recv()
    server.join(10)

    def after(times, t):  # the first stamp at or after t
        return times[bisect_left(times, t)]
    segments = {k: [] for k in ("robot send()", "wire to the server", "server: frame -> pass", "(pass)",
                                "server: pass -> FINAL sent", "wire to the robot", "robot: frame -> recv() returns",
                                "overhead (all but the pass)")}
    for s0, s1, r in list(zip(stamps["send"], stamps["sent"], stamps["recv"]))[30:]:
        frame = after(far["frame"], s1)
        p0 = after(far["pass"], frame)
        p1 = after(far["passed"], p0)
        sent = after(far["sent"], p1)
        back = after(stamps["frame"], sent)
        for key, value in zip(segments, (s1 - s0, frame - s1, p0 - frame, p1 - p0, sent - p1, back - sent, r - back,
                                         (r - s0) - (p1 - p0))):
            segments[key].append(value * 1000)
    print(f"one robot, {rounds} rounds; medians (ms) of each stretch of a round, in order:")
    for key, values in segments.items():
        print(f"  {key:<34} {statistics.median(values):7.3f}   p90 {statistics.quantiles(values, n=10)[8]:7.3f}")


def start_process(args: list[str], log: Path, env: dict | None = None,
                  cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """`spec-edge-cloud ARGS` in its own process (every thread of it on `cpus`, if given); returns it and
    the endpoint of its ready line."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env or dict(os.environ, PYTHONUNBUFFERED="1"),
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"ready on (tcp://\S+)", log.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()[-2000:]}")


def start_server(target_dir: Path, log: Path, extra: list[str] = (),
                 cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    return start_process(["verifier", "--target", str(target_dir), "--bind", "tcp://127.0.0.1:0", "--quiet-rounds",
                          "--log-level", "WARNING", *extra], log,
                         dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"), cpus)


def summary(samples: list[tuple[float, float, int]]) -> dict:
    wall = [w * 1000 for w, _, _ in samples]
    compute = [c * 1000 for _, c, _ in samples]
    over = [w - c for w, c in zip(wall, compute)]
    q = lambda xs, p: statistics.quantiles(xs, n=20)[int(p * 20) - 1]  # noqa: E731
    return dict(n=len(samples), round_ms=statistics.median(wall), round_p90=q(wall, 0.9),
                compute_ms=statistics.median(compute), overhead_ms=statistics.median(over), overhead_p90=q(over, 0.9),
                rows=statistics.mean(r for _, _, r in samples))


def row(label: str, s: dict, extra: str = "") -> str:
    return (f"{label:<28} {s['n']:>6} {s['round_ms']:>9.2f} {s['round_p90']:>9.2f} {s['compute_ms']:>9.2f} "
            f"{s['overhead_ms']:>9.3f} {s['overhead_p90']:>9.3f}  {extra}")


def regime(name: str, responses: int, max_new: int) -> None:
    """Every mode through verifier + emulator processes, timings padded to the profile (EMULATED)."""
    import copy

    import torch

    from spec_edge_cloud.decoding.client import SpecClient
    from spec_edge_cloud.decoding.modes import DecodeConfig
    from spec_edge_cloud.decoding.timing import Pacer, TimingProfile
    from spec_edge_cloud.modeling.bundle import ModelBundle
    from spec_edge_cloud.modeling.exit_heads import ExitHeads
    from spec_edge_cloud.transport.client import LinkOptions, connect
    profile = TimingProfile.load(name)
    tmp = Path(tempfile.mkdtemp(prefix="bench_regime_"))
    target = tiny_bundle("llama", vocab=60, seed=14, layers=8)
    with torch.no_grad():
        for layer in target.model.get_decoder().layers[4:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    target.save(tmp / "target")
    ExitHeads([4], target.hidden_size, 16).save(tmp / "target")
    draft_model = copy.deepcopy(target.model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in draft_model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.06 * p.std().clamp(min=1e-3))
    draft = ModelBundle(draft_model, target.tokenizer)
    server, endpoint = start_server(tmp / "target", tmp / "verifier.log", ["--target-profile", name])
    emu, robot_end = start_process(["link", "--listen", "tcp://127.0.0.1:0", "--forward", endpoint, "--profile", name],
                                   tmp / "link.log")
    try:
        link = connect(robot_end, draft.tokenizer_fingerprint(), LinkOptions(retry_s=5.0, dead_after_s=5.0))
        print(f"EMULATED regime {profile.name}: {profile.description}")
        print(f"verifier says: timings emulated with profile {link.welcome.emulated!r}; link emulator: "
              f"rtt {profile.rtt_ms:g} ms, jitter {profile.jitter_ms:g} ms")
        rtt, pass5 = profile.rtt_ms, profile.target_ms(1.0, 5)
        print(f"{'mode':<12} {'TTC s':>7} {'ms/token':>9} {'rounds':>7} {'hits':>5} {'round ms':>9} "
              f"{'profile':>8} {'EARLY ms':>9} {'profile':>8}")
        for mode in ("cloud", "spec", "spec-ee", "spec-ee-pre"):
            ttc, tokens, rounds, hits, final, early = 0.0, 0, 0, 0, [], []
            for r in range(responses):
                first = len(link.stats.rounds)
                cfg = DecodeConfig(mode=mode, gamma=4, max_new_tokens=max_new, exit_threshold=0.0, deadline_s=10.0)
                resp = SpecClient(draft, link, cfg, pacer=Pacer(profile)).generate(draft.encode(f"w{5 + r} w9 w2"))
                if not resp.verified:
                    raise RuntimeError(f"{mode}: fell back to the robot ({resp.metrics.fallback_reason})")
                ttc += resp.metrics.ttc_s
                tokens += resp.metrics.tokens
                rounds += resp.metrics.rounds
                hits += resp.metrics.hits
                for t in list(link.stats.rounds)[first:]:
                    if t.tokens_in_pass == 5 and t.round > 0:
                        final.append((t.final - t.sent) * 1000)
                        early += [(at - t.sent) * 1000 for _, at in t.early[:1]]
            med = lambda xs: f"{statistics.median(xs):9.0f}" if xs else f"{'-':>9}"  # noqa: E731
            pre = " (pre-drafted rounds overlap)" if mode == "spec-ee-pre" else ""
            print(f"{mode:<12} {ttc / responses:7.2f} {1000 * ttc / tokens:9.0f} {rounds:7d} {hits:5d} {med(final)} "
                  f"{rtt + pass5:8.0f} {med(early)} {rtt + profile.target_ms(0.5, 5):8.0f}{pre}")
        link.close()
    finally:
        for p in (emu, server):
            p.terminate()
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300, help="rounds for the single-robot overhead")
    ap.add_argument("--robots", default="1,4,16")
    ap.add_argument("--rounds-per-robot", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--regime", default=None, help="a timing profile: run whole responses in that EMULATED regime")
    ap.add_argument("--responses", type=int, default=2, help="responses per mode (--regime)")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="(--regime)")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead: where one robot's round goes (timestamps on both sides of the bridge)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)  # 2 shared cores: intra-op threads only fight the other processes
    if args.regime:
        return regime(args.regime, args.responses, args.max_new_tokens)

    tmp = Path(tempfile.mkdtemp(prefix="bench_bridge_"))
    bundle = tiny_bundle("llama", vocab=60, seed=0, layers=args.layers, hidden=args.hidden)
    bundle.save(tmp / "target")
    vocab, tokenizer = len(bundle.tokenizer), bundle.tokenizer_fingerprint()
    print(f"target: tiny Llama, {args.layers} layers, width {args.hidden}; draft rounds of {GAMMA} tokens; "
          f"loopback, no emulated delay; {os.cpu_count()} CPU cores shared by robots and server; load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    if args.breakdown:
        return breakdown(tmp / "target", tokenizer, vocab, args.rounds)
    print(f"{'':<28} {'rounds':>6} {'round ms':>9} {'p90':>9} {'compute':>9} {'overhead':>9} {'p90':>9}")

    # baseline: the same rounds through the in-process link (no sockets, no serialization)
    from spec_edge_cloud.decoding.link import InProcessLink
    from spec_edge_cloud.decoding.target import TargetEngine
    from spec_edge_cloud.decoding.verifier import VerifierService
    link = InProcessLink(VerifierService(TargetEngine.from_dir(tmp / "target", exit_layers=[1])))
    robot(link, vocab, 30, 99)  # warm-up
    print(row("in-process link (baseline)", summary(robot(link, vocab, args.rounds, 0))))
    link.close()

    server, endpoint = start_server(tmp / "target", tmp / "verifier.log")
    single, single_endpoint = start_server(tmp / "target", tmp / "verifier-single.log", ["--max-batch", "1"])
    core = {min(os.sched_getaffinity(0))}
    one_core, one_core_endpoint = start_server(tmp / "target", tmp / "verifier-one-core.log", cpus=core)
    ctx = mp.get_context("fork")
    try:
        def fleet(n: int, rounds: int, endpoint: str = endpoint, cpus: set[int] | None = None) -> tuple[list, float]:
            start, results = ctx.Event(), ctx.Queue()
            procs = [ctx.Process(target=robot_process, args=(endpoint, tokenizer, vocab, rounds, 1000 + i, start,
                                                              results, cpus)) for i in range(n)]
            for p in procs:
                p.start()
            time.sleep(1.0 + 0.1 * n)  # every robot connected before the clock starts
            t0 = time.perf_counter()
            start.set()
            samples = [s for _ in procs for s in results.get(timeout=600)]
            elapsed = time.perf_counter() - t0
            for p in procs:
                p.join(10)
            return samples, elapsed

        for label, at, cpus in (("", endpoint, None), (", one core", one_core_endpoint, core)):
            fleet(1, 30, at, cpus)  # warm-up
            s = summary(fleet(1, args.rounds, at, cpus)[0])
            print(row(f"ZeroMQ, 1 robot{label}", s,
                      f"goal: overhead <= 0.5 ms -> {'met' if s['overhead_ms'] <= 0.5 else 'NOT met'}"))
            floor = summary(bare_echo(tmp / "target", s["compute_ms"] / 1000, args.rounds, cpus))
            print(row(f"bare pyzmq echo{label or ' (floor)'}", floor, "same processes and compute, no project code"))
        for n in [int(x) for x in args.robots.split(",")]:
            for label, at in (("batched", endpoint), ("one pass at a time", single_endpoint)):
                samples, elapsed = fleet(n, args.rounds_per_robot, at)
                s = summary(samples)
                print(row(f"{n} robots, {label}", s, f"{len(samples) / elapsed:.0f} rounds/s, rows {s['rows']:.2f}"))
    finally:
        for p in (server, single, one_core):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
