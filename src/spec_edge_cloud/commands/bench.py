"""`spec-edge-cloud bench`: latency benchmarks.

    bench replay BAG --modes edge,cloud,spec,spec-ee,spec-ee-pre,adaptive
                     --link rtt=120ms,jitter=10ms,bandwidth=20mbit [--regime NAME|native] [--repeat N]
                     [--inprocess] [--json FILE]
        every frame and instruction of a bag through every mode over the real ZeroMQ bridge
    bench profile --regime go2-orin-a100,nano-a100,h100 [--traces REPLAY.json] [--calibrate REPLAY.json]
                  [--json FILE]
        predicted latency in regimes this machine cannot run (discrete-event simulator)
    bench fleet --replicas 1,2,4 --robots 8,32,64 --regime go2-orin-a100 [--kill] [--json FILE]
        a verifier fleet on Ray: rounds/s and p95 round time per configuration, the front's overhead,
        recovery after a replica is killed (docs/fleet.md)

    bench soak --minutes 60 --robots 8 --regime go2-orin-a100 [--cycles 6] [--json FILE]
        robots decoding for an hour against a verifier restarted and a link broken on a schedule:
        memory and descriptors over time, sessions left open, every verified answer checked

Reports (report.md, result.json, plots) go to --out (default runs/bench-<kind>-<time>/).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..decoding.modes import MODES, DecodeConfig
from ..modeling.placement import add_placement_arguments, placement_from_args

DEFAULT_REGIMES = "go2-orin-a100,nano-a100,h100"
DEFAULT_SOAK_MODES = ("spec-ee-pre", "spec-ee", "spec", "adaptive", "cloud")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_link(text: str):
    """'rtt=120ms,jitter=10ms,bandwidth=20mbit,loss=0.01' -> transport.emulator.LinkSpec."""
    from ..transport.emulator import LinkSpec, parse_duration, parse_loss, parse_rate
    fields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("rtt", "jitter", "bandwidth", "loss"):
            raise ValueError(f"link setting {part!r} is not one of rtt=, jitter=, bandwidth=, loss= "
                             "(example: rtt=120ms,jitter=10ms,bandwidth=20mbit)")
        fields[key] = value
    return LinkSpec(parse_duration(fields.get("rtt", "0ms")), parse_duration(fields.get("jitter", "0ms")),
                    parse_rate(fields.get("bandwidth")), parse_loss(fields.get("loss", "0")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True)
    r = sub.add_parser("replay", help="replay a bag through every decoding mode, side by side")
    r.add_argument("bag", type=Path, nargs="?", default=None, help="the bag whose frames are replayed")
    r.add_argument("--text-prompts", type=int, default=None, metavar="N",
                   help="instead of a bag: the first N held-out instruction prompts (training/prompts.py) as text, "
                        "for a text-only pair")
    r.add_argument("--smollm2", action="store_true", help="the real-weights text pair (models/smollm2-exits, "
                   "models/smollm2-draft, the cached SmolLM2-135M target) as --draft/--target/--exits")
    r.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default: all)")
    r.add_argument("--link", default=None,
                   help="rtt=120ms,jitter=10ms,bandwidth=20mbit[,loss=0.01] (default: the regime's link)")
    r.add_argument("--regime", default="native", help="timing profile name or file, `h100`, or `native`")
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--frames", type=int, default=None, help="replay only the first N frames")
    r.add_argument("--warmup", type=int, default=1, help="uncounted responses per mode first")
    r.add_argument("--draft", type=Path, default=Path("models/draft"))
    r.add_argument("--target", type=Path, default=Path("models/target"))
    r.add_argument("--exits", type=Path, default=None, help="exit-head directory (default: beside the target)")
    r.add_argument("--stand-in", type=Path, nargs="?", const=Path("runs/stand-in"), default=None,
                   help="use the tiny stand-in pair (bench/stand_in.py), written to DIR on first use")
    DecodeConfig.add_arguments(r, exclude=("mode",))
    r.add_argument("--inprocess", action="store_true", help="in-process link instead of the ZeroMQ bridge")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads per process, robot and verifier (0: torch's default)")
    add_placement_arguments(r)
    r.add_argument("--json", type=Path, default=None, help="also write the result JSON here")
    r.add_argument("--out", type=Path, default=None, help="report directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    g = sub.add_parser("gpu", help="time the engine's verification passes, eager and compiled, where they run")
    source = g.add_mutually_exclusive_group()
    source.add_argument("--target", default=None, help="a target checkpoint directory")
    source.add_argument("--shape", default="llama-2-7b", help="random weights of a published shape: "
                        "llama-2-7b, qwen2-vl-7b, qwen2-vl-2b, or tiny (default llama-2-7b)")
    g.add_argument("--draft-lengths", type=_ints, default=[0, 1, 2, 4, 8])
    g.add_argument("--rows", type=_ints, default=[1, 4, 16], help="robots batched into one pass")
    g.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="auto: eager and compiled on a GPU, eager on the CPU")
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--dtype", default="auto", help="comma-separated precisions, e.g. float32,bfloat16 (side by side)")
    g.add_argument("--prefix", type=int, default=512, help="cached tokens before each pass")
    g.add_argument("--reps", type=int, default=10)
    g.add_argument("--warmup", type=int, default=3, help="untimed passes first (compiled: the capture)")
    g.add_argument("--json", type=Path, default=None)
    g.add_argument("--profile-out", type=Path, default=None, help="a timing profile --target-profile accepts")

    q = sub.add_parser("quantize", help="acceptance lost to a weight-only quantized draft (int8, int4)")
    q.add_argument("--draft", type=Path, default=Path("models/draft"))
    q.add_argument("--target", type=Path, default=Path("models/target"))
    q.add_argument("--exits", type=Path, default=None, help="exit-head directory (default: beside the target)")
    q.add_argument("--bag", type=Path, default=Path("data/bags/sim_small"), help="prompts: the bag's frames")
    q.add_argument("--frames", type=int, default=8)
    q.add_argument("--quantize", default="none,int8,int4", help="comma-separated: none, int8, int4")
    DecodeConfig.add_arguments(q, only=("gamma", "max_new_tokens"))
    add_placement_arguments(q)
    q.add_argument("--json", type=Path, default=None)

    s = sub.add_parser("soak", help="robots for an hour against a cloud restarted and a link broken on a schedule")
    s.add_argument("--minutes", type=float, default=60.0)
    s.add_argument("--robots", type=int, default=8)
    s.add_argument("--regime", default="go2-orin-a100", help="timing profile the verifier and drafts are paced to")
    s.add_argument("--cycles", type=int, default=6, help="fault cycles over the run (each: restart, lossy, cut, down)")
    s.add_argument("--modes", default=",".join(DEFAULT_SOAK_MODES), help="greedy modes, one per robot in turn")
    s.add_argument("--bag", type=Path, default=Path("data/bags/sim_small"), help="prompts: the bag's frames")
    s.add_argument("--draft", type=Path, default=Path("models/draft"))
    s.add_argument("--target", type=Path, default=Path("models/target"))
    s.add_argument("--exits", type=Path, default=None, help="exit-head directory (default: beside the target)")
    s.add_argument("--max-new-tokens", type=int, default=16)
    s.add_argument("--sample-s", type=float, default=30.0, help="seconds between memory and descriptor samples")
    s.add_argument("--idle-timeout", type=float, default=120.0, help="the verifier's idle_timeout_s")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", type=Path, default=None, help="the whole result: samples, faults, every response")

    f = sub.add_parser("fleet", help="a verifier fleet on Ray: throughput as replicas and robots grow")
    f.add_argument("--target", type=Path, default=Path("models/target"))
    f.add_argument("--replicas", type=_ints, default=[1, 2, 4])
    f.add_argument("--robots", type=_ints, default=[8, 32, 64])
    f.add_argument("--regime", default="go2-orin-a100",
                   help="timing profile the replicas' passes are padded to (EMULATED), or native")
    f.add_argument("--seconds", type=float, default=30.0, help="measured seconds per configuration")
    f.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    f.add_argument("--gamma", type=int, default=4, help="draft tokens per round")
    f.add_argument("--max-batch", type=int, default=8, help="robots' rounds per pass on each replica")
    f.add_argument("--overhead-rounds", type=int, default=300, help="rounds of the front-overhead probe")
    f.add_argument("--kill", action="store_true", help="kill a replica during the largest run (recovery time)")
    f.add_argument("--ray", default="local", help="local, auto or HOST:PORT")
    f.add_argument("--replica-cpus", type=float, default=0.25, help="Ray CPUs per replica (paced passes mostly sleep)")
    f.add_argument("--json", type=Path, default=None)

    p = sub.add_parser("profile", help="predict latency in other regimes from timing profiles (simulator)")
    p.add_argument("--regime", default=DEFAULT_REGIMES, help=f"comma-separated regimes (default {DEFAULT_REGIMES})")
    p.add_argument("--token-acceptance-prob", type=_floats, default=[0.55, 0.575, 0.6],
                   help="the simulated draft's per-token acceptance probability (each token accepted with it until "
                        "the first miss); its acceptance, the share of drafted tokens accepted, is lower and is "
                        "reported beside it")
    p.add_argument("--agreement", type=_floats, default=[0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--tokens", type=int, default=32, help="tokens per simulated response")
    p.add_argument("--responses", type=int, default=40, help="simulated responses per mode and point")
    DecodeConfig.add_arguments(p, only=("gamma",))
    p.add_argument("--exit-fraction", type=float, default=0.5, help="depth of the first early exit")
    p.add_argument("--fleet", type=_ints, default=[1, 2, 4, 8, 16], help="robot counts (empty: skip)")
    p.add_argument("--traces", type=Path, default=None, help="replay result.json whose recorded rounds to replay")
    p.add_argument("--confidences", type=Path, default=None,
                   help="replay result.json whose exit confidences the sweep's rounds carry (default: --traces'; "
                        "without either, the calibrated adaptive trusts no early verdict in the sweep)")
    p.add_argument("--calibrate", type=Path, action="append", default=[],
                   help="replay result.json (emulated regime) to compare predictions with")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    from ..bench.bridge import BridgeError
    try:
        return {"replay": _replay, "profile": _profile, "gpu": _gpu, "quantize": _quantize,
                "soak": _soak, "fleet": _fleet}[args.bench_command](args)
    except (ValueError, FileNotFoundError, BridgeError) as exc:
        print(f"spec-edge-cloud bench {args.bench_command}: error: {exc}", file=sys.stderr)
        return 2


def _gpu(args: argparse.Namespace) -> int:
    from ..bench import gpu
    from ..modeling.placement import resolve_placement

    if not args.target and args.shape not in gpu.SHAPES:
        raise ValueError(f"unknown --shape {args.shape!r}; known: {', '.join(gpu.SHAPES)}")
    placements = [resolve_placement(args.device, d) for d in args.dtype.split(",")]
    cuda = placements[0].device.startswith("cuda")
    if args.compile == "on" and not cuda:
        raise ValueError("--compile on captures CUDA graphs: it needs a CUDA device")
    modes = {"on": [True], "off": [False], "auto": [False, True] if cuda else [False]}[args.compile]
    if args.reps < 1 or args.warmup < 0 or args.prefix < 1 or not args.rows or min(args.rows) < 1:
        raise ValueError("--reps, --prefix and --rows must be positive, --warmup >= 0")
    result = gpu.run_gpu_bench(args.target, args.shape, placements, args.draft_lengths, args.rows, modes,
                               args.prefix, args.reps, args.warmup, log=lambda s: print(s, flush=True))
    name = f"measured-{Path(args.target).name if args.target else args.shape}"
    gpu.write(result, args.json, args.profile_out, name)
    print(gpu.summary(result))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from ..bench.quantized import quantization_acceptance
    from ..modeling.quantize import QUANTIZATIONS

    modes = [m.strip() for m in args.quantize.split(",") if m.strip()]
    if not modes or set(modes) - set(QUANTIZATIONS):
        raise ValueError(f"--quantize {args.quantize!r}: choose from {', '.join(QUANTIZATIONS)}")
    print(f"{args.draft} against {args.target}, {args.frames} frames of {args.bag}:", flush=True)
    result = quantization_acceptance(args.draft, args.target, args.exits, args.bag, args.frames, modes,
                                     placement_from_args(args), args.gamma, args.max_new_tokens)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if not any(m["lossless_mismatches"] for m in result["modes"].values()) else 1


def _soak(args: argparse.Namespace) -> int:
    from ..bench.soak import SoakConfig, run_soak, summary

    cfg = SoakConfig(minutes=args.minutes, robots=args.robots, regime=args.regime, cycles=args.cycles, bag=args.bag,
                     draft=args.draft, target=args.target, exits=args.exits,
                     modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
                     max_new_tokens=args.max_new_tokens, sample_s=args.sample_s, idle_timeout_s=args.idle_timeout,
                     seed=args.seed)
    result = run_soak(cfg, log=lambda s: print(s, flush=True))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(summary(result))
    return 0 if result["ok"] else 1

def _fleet(args: argparse.Namespace) -> int:
    from ..bench.fleet import run_fleet_bench, table

    if not args.replicas or min(args.replicas) < 1 or not args.robots or min(args.robots) < 1:
        raise ValueError("--replicas and --robots must be positive counts")
    if not (args.target / "config.json").is_file():
        raise FileNotFoundError(f"no target model in {args.target}")
    result = run_fleet_bench(args.target, args.replicas, args.robots, args.regime, args.seconds, args.warmup,
                             args.gamma, args.max_batch, args.overhead_rounds, args.kill, args.ray, args.replica_cpus,
                             log=lambda s: print(s, flush=True))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


def _out_dir(args: argparse.Namespace) -> Path:
    return args.out or Path("runs") / f"bench-{args.bench_command}-{time.strftime('%Y%m%d-%H%M%S')}"


def _replay(args: argparse.Namespace) -> int:
    from ..bench.replay import Replay, ReplayConfig
    from ..bench.report import write_replay
    from ..bench.stand_in import stand_in_dirs
    from ..modeling.bundle import ModelDirError
    from ..training.prompts import instruction_prompts

    out = _out_dir(args)
    draft, target, exits = args.draft, args.target, args.exits
    if args.stand_in:
        draft, target = stand_in_dirs(args.stand_in)
    elif args.smollm2:
        from ..training.text_pair import pair_dirs
        draft, target, exits = pair_dirs(Path("models"))
    if args.text_prompts is not None and args.text_prompts < 1:
        raise ValueError(f"--text-prompts must be >= 1, got {args.text_prompts}")
    texts = instruction_prompts("heldout")[: args.text_prompts] if args.text_prompts else None
    cfg = ReplayConfig(args.bag, draft, target, exits, [m.strip() for m in args.modes.split(",")],
                       parse_link(args.link) if args.link else None, args.regime, args.repeat, args.frames,
                       args.warmup, DecodeConfig.from_args(args), args.inprocess, out, args.threads or None,
                       placement_from_args(args), texts)
    try:
        result = Replay(cfg).run(progress=not args.quiet)
    except ModelDirError as exc:
        raise FileNotFoundError(f"{exc}; train the default models, pass --draft/--target, or use --stand-in") from None
    files = write_replay(result, out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(files["json"].read_text())
    print(files["markdown"].read_text())
    print(f"report: {files['markdown']}; JSON: {args.json or files['json']}")
    return 0 if result["lossless"]["ok"] is not False else 1


def _profile(args: argparse.Namespace) -> int:
    from ..bench import predict
    from ..bench.report import write_profile

    regimes = [r.strip() for r in args.regime.split(",") if r.strip()]
    traces = json.loads(args.traces.read_text()) if args.traces else None
    recorded = json.loads(args.confidences.read_text()) if args.confidences else traces
    confidences = predict.exit_confidences(recorded, args.exit_fraction) if recorded else None
    result = {"kind": "profile", "seed": args.seed, "regimes": regimes, "emulated": True, "paper": [],
              "fleet": [], "calibration": [], "traces": []}
    for name in regimes:
        result["paper"].append(predict.paper_comparison(name, args.token_acceptance_prob, args.agreement, args.tokens,
                                                        args.responses, args.gamma, args.seed, args.exit_fraction,
                                                        confidences))
        if args.fleet:
            result["fleet"].append(predict.fleet(name, args.fleet, tokens=args.tokens, gamma=args.gamma,
                                                 seed=args.seed))
        if args.traces:
            result["traces"].append(predict.recorded(name, traces, args.gamma, args.seed, args.exit_fraction))
    for path in args.calibrate:
        result["calibration"].append(predict.calibrate(json.loads(path.read_text()), args.seed))
    out = _out_dir(args)
    files = write_profile(result, out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(files["json"].read_text())
    print(files["markdown"].read_text())
    print(f"report: {files['markdown']}; JSON: {args.json or files['json']}")
    return 0
