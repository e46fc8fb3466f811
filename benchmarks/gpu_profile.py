"""Time one verification pass of real-shaped target models, layer by layer.

Why: the cloud side of the pipeline is emulated on CPUs from a timing profile (the profile
simulator, `--target-profile`). An early exit after decoder layer i can report its verdict once
layer i is done, so the profile needs, for each draft length gamma, not only the whole pass but the
time from its start to the end of every layer, and the cost of a head (final norm + lm_head) that
turns a hidden state into a verdict.

What one run measures, for each shape and each prefix length P:
  - prefill_ms: the forward over the P-token prefix (logits of the last position only);
  - for each gamma: a cached forward of gamma + 1 tokens over that prefix (gamma 0 is one
    autoregressive step), the cache cropped back to P after every pass so each pass sees the same
    prefix. total_ms, cum_layer_ms[i] (start of pass -> end of decoder layer i) and head_ms
    (end of the last layer -> end of lm_head) are medians over --reps passes.
Optionally (--static-compile) the Llama-2-7B shape with a static KV cache, eager against
torch.compile(mode="reduce-overhead") (CUDA graphs), for gamma 0 and 4 at P = 512.

Weights are random (timing does not depend on their values); the Qwen2-VL-7B language model is
built as a Qwen2ForCausalLM of the same shape (1-D instead of multimodal rotary positions, the same
matrices). Times come from CUDA events on a GPU and from the host clock on a CPU, where execution
is synchronous. `--tiny` builds 2-layer models of the same families for a quick CPU check.

    python benchmarks/gpu_profile.py --out gpu_profile.json [--static-compile]

Only torch, transformers and the standard library are used: the GPU machine has nothing else.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, Qwen2Config, StaticCache

# Published shapes (Llama-2-7B; the language model of Qwen2-VL-7B-Instruct).
SHAPES: dict[str, tuple[type, dict]] = {
    "llama-2-7b": (LlamaConfig, dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)),
    "qwen2-vl-7b-lm": (Qwen2Config, dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, tie_word_embeddings=False)),
}
# Same families, 2 layers and small widths: exercises every code path on a CPU in seconds.
TINY_SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  vocab_size=256, max_position_embeddings=2048)
TINY_KV_HEADS = {"llama-2-7b": 4, "qwen2-vl-7b-lm": 2}
STATIC_SHAPE, STATIC_PREFIX, STATIC_GAMMAS = "llama-2-7b", 512, (0, 4)


def build_model(name: str, tiny: bool, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A randomly initialised causal LM of the named shape, allocated directly on `device`."""
    config_cls, sizes = SHAPES[name]
    if tiny:
        sizes = {**sizes, **TINY_SIZES, "num_key_value_heads": TINY_KV_HEADS[name]}
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config_cls(**sizes), dtype=dtype, attn_implementation="sdpa")
    return model.eval()


class Clock:
    """Timestamps on the timeline where the work runs.

    On a GPU kernels run asynchronously to the host, so a host clock would time the launches, not
    the execution: CUDA events are recorded into the stream instead. On a CPU execution is
    synchronous and the host clock is exact.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, start, end) -> float:
        """Milliseconds between two marks (call sync() first on a GPU)."""
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


class LayerMarks:
    """Forward hooks that stamp the end of every decoder layer and of lm_head during a pass."""

    def __init__(self, model: torch.nn.Module, clock: Clock):
        self.clock = clock
        self.layer_ends: list = []
        self.head_end = None
        self._handles = [layer.register_forward_hook(self._layer_done) for layer in model.model.layers]
        self._handles.append(model.lm_head.register_forward_hook(self._head_done))

    def _layer_done(self, module, args, output) -> None:
        self.layer_ends.append(self.clock.mark())

    def _head_done(self, module, args, output) -> None:
        self.head_end = self.clock.mark()

    def reset(self) -> None:
        self.layer_ends, self.head_end = [], None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class PassTiming:
    total_ms: float
    cum_layer_ms: list[float]
    head_ms: float


def cache_kwarg(model: torch.nn.Module) -> str:
    """The name under which forward() takes the KV cache: `past_key_values` until transformers
    renamed it `cache` (5.2x); the GPU image has 5.17, this machine a later release."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def timed_pass(model, ids: torch.Tensor, cache, marks: LayerMarks, clock: Clock) -> PassTiming:
    """One cached forward of `ids`, then the cache cropped back to where it was."""
    marks.reset()
    kwargs = {cache_kwarg(model): cache, "use_cache": True}
    start = clock.mark()
    model(ids, **kwargs)
    end = clock.mark()
    clock.sync()
    cache.crop(-ids.shape[1])
    cum = [clock.ms(start, e) for e in marks.layer_ends]
    return PassTiming(clock.ms(start, end), cum, clock.ms(marks.layer_ends[-1], marks.head_end))


def spread(values: list[float]) -> list[float]:
    """[median, min, max], the form gpu_static_h100_llama7b.json used."""
    return [statistics.median(values), min(values), max(values)]


def prefill(model, ids: torch.Tensor, reps: int, clock: Clock, cache_factory) -> tuple[list[float], object]:
    """Forward the prefix `reps` + 1 times (the first untimed), each into a fresh cache; returns
    [median, min, max] ms and the last cache, which holds the prefix for the passes that follow."""
    times = []
    for rep in range(reps + 1):
        cache = cache_factory()
        kwargs = {cache_kwarg(model): cache, "use_cache": True, "logits_to_keep": 1}
        start = clock.mark()
        model(ids, **kwargs)
        end = clock.mark()
        clock.sync()
        if rep:
            times.append(clock.ms(start, end))
    return spread(times), cache


def profile_shape(model, prefixes: list[int], gammas: list[int], reps: int, warmup: int,
                  clock: Clock, device: torch.device, log) -> list[dict]:
    """Eager passes over a DynamicCache for every (prefix, gamma): one record each."""
    runs = []
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    marks = LayerMarks(model, clock)
    try:
        for prefix in prefixes:
            prefix_ids = torch.randint(vocab, (1, prefix), generator=gen).to(device)
            prefill_ms, cache = prefill(model, prefix_ids, max(3, reps // 3), clock,
                                        lambda: DynamicCache(config=model.config))
            for gamma in gammas:
                ids = torch.randint(vocab, (1, gamma + 1), generator=gen).to(device)
                for _ in range(warmup):
                    timed_pass(model, ids, cache, marks, clock)
                passes = [timed_pass(model, ids, cache, marks, clock) for _ in range(reps)]
                if cache.get_seq_length() != prefix:
                    raise RuntimeError(f"cache holds {cache.get_seq_length()} tokens after cropping, not {prefix}")
                totals = [p.total_ms for p in passes]
                cum = [round(statistics.median(col), 4) for col in zip(*(p.cum_layer_ms for p in passes))]
                run = dict(prefix=prefix, gamma=gamma, tokens=gamma + 1, total_ms=statistics.median(totals),
                           total_ms_min=min(totals), total_ms_max=max(totals), cum_layer_ms=cum,
                           head_ms=round(statistics.median(p.head_ms for p in passes), 4),
                           prefill_ms=prefill_ms[0], prefill_ms_min=prefill_ms[1], prefill_ms_max=prefill_ms[2])
                runs.append(run)
                half = cum[len(cum) // 2 - 1]
                log(f"  P={prefix:5d} gamma={gamma}: total {run['total_ms']:8.3f} ms, half depth {half:8.3f} ms, "
                    f"head {run['head_ms']:.3f} ms, prefill {prefill_ms[0]:.3f} ms")
            del cache
    finally:
        marks.remove()
    return runs


def rewind_static(cache: StaticCache, tokens: int) -> None:
    """Move a static cache's write position back by `tokens`, in place (the graphs read its address).

    Each layer writes at its `cumulative_length`; transformers 5.17 (the GPU image) has no
    StaticLayer.crop, later releases do the same subtraction in one.
    """
    for layer in cache.layers:
        layer.cumulative_length.sub_(tokens)


def static_times(step, kwarg: str, ids: torch.Tensor, cache, reps: int, clock: Clock) -> list[float]:
    """`reps` passes of `step` over a static cache, rewound after each (the next write overwrites)."""
    times = []
    kwargs = {kwarg: cache, "use_cache": True}
    for _ in range(reps):
        start = clock.mark()
        step(ids, **kwargs)
        end = clock.mark()
        clock.sync()
        rewind_static(cache, ids.shape[1])
        times.append(clock.ms(start, end))
    return times


def logits_rel_err(eager, graph_step, kwarg: str, ids: torch.Tensor, cache) -> float:
    """||compiled - eager|| / ||eager|| over the logits of one pass: a timing of a graph that
    computes something else (a stale cache position, say) would be worthless."""
    logits = []
    for step in (eager, graph_step):
        logits.append(step(ids, **{kwarg: cache}, use_cache=True).logits.float().clone())
        rewind_static(cache, ids.shape[1])
    return float((logits[1] - logits[0]).norm() / logits[0].norm())


def profile_static_compiled(model, prefix: int, gammas: tuple[int, ...], reps: int, clock: Clock,
                            device: torch.device, deadline, log) -> dict:
    """Static KV cache: eager forward against torch.compile(mode="reduce-overhead", fullgraph=True).

    Each token count is its own graph (a recompile). `deadline()` is asked before each compile,
    which can take a minute: a gamma it refuses is recorded as skipped, not left out silently.
    """
    gen = torch.Generator().manual_seed(2)
    vocab = model.config.vocab_size
    kwarg = cache_kwarg(model)
    cache = StaticCache(config=model.config, max_cache_len=prefix + max(gammas) + 1)

    def emptied():
        cache.reset()  # zeroes in place: the graphs keep reading the same addresses
        return cache

    prefix_ids = torch.randint(vocab, (1, prefix), generator=gen).to(device)
    prefill_ms, _ = prefill(model, prefix_ids, 1, clock, emptied)
    compiled = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)

    def graph_step(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()  # outputs of the previous replay are not kept
        return compiled(*args, **kwargs)

    runs = []
    for gamma in gammas:
        ids = torch.randint(vocab, (1, gamma + 1), generator=gen).to(device)
        static_times(model, kwarg, ids, cache, 3, clock)
        eager = spread(static_times(model, kwarg, ids, cache, reps, clock))
        refusal = deadline()
        if refusal:
            runs.append(dict(gamma=gamma, tokens=gamma + 1, eager_ms=eager, skipped=refusal))
            log(f"  gamma={gamma}: eager {eager[0]:.3f} ms; compiled skipped ({refusal})")
            continue
        t0 = time.perf_counter()
        static_times(graph_step, kwarg, ids, cache, 3, clock)  # compile, then record the graph
        compile_s = round(time.perf_counter() - t0, 1)
        compiled_ms = spread(static_times(graph_step, kwarg, ids, cache, reps, clock))
        if int(cache.get_seq_length()) != prefix:
            raise RuntimeError(f"static cache at {int(cache.get_seq_length())} tokens, not {prefix}")
        rel_err = logits_rel_err(model, graph_step, kwarg, ids, cache)
        runs.append(dict(gamma=gamma, tokens=gamma + 1, eager_ms=eager, compiled_ms=compiled_ms,
                         compile_s=compile_s, logits_rel_err=rel_err))
        log(f"  gamma={gamma}: eager {eager[0]:.3f} ms, compiled {compiled_ms[0]:.3f} ms (compile {compile_s} s), "
            f"logits rel. err. {rel_err:.2e}")
    return dict(prefill_ms=prefill_ms, runs=runs)


def write_json(path: str, result: dict) -> None:
    """Replace the file whole, so a run killed mid-write still leaves the last complete result."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def parse_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write (rewritten after each shape)")
    parser.add_argument("--tiny", action="store_true", help="2-layer models of the same families (CPU check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", type=lambda s: s.split(","), default=list(SHAPES))
    parser.add_argument("--prefixes", type=parse_ints, default=[128, 512, 1024])
    parser.add_argument("--gammas", type=parse_ints, default=[0, 1, 2, 3, 4, 6, 8])
    parser.add_argument("--reps", type=int, default=15, help="timed passes per (prefix, gamma)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes per (prefix, gamma)")
    parser.add_argument("--static-compile", action="store_true",
                        help=f"also {STATIC_SHAPE} with a static cache, eager vs torch.compile (CUDA graphs)")
    parser.add_argument("--static-prefix", type=int, default=STATIC_PREFIX)
    parser.add_argument("--compile-start-by-s", type=float, default=300.0,
                        help="start no compile later than this many seconds after launch")
    args = parser.parse_args(argv)
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; known: {sorted(SHAPES)}")
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be >= 1 and --warmup >= 0")

    launched = time.perf_counter()
    device = torch.device(args.device)
    dtype = torch.float32 if args.tiny and device.type == "cpu" else torch.bfloat16
    clock = Clock(device)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - launched:6.1f} s] {msg}", flush=True)

    result = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        torch=torch.__version__, transformers=transformers.__version__, cuda=torch.version.cuda,
        python=sys.version.split()[0], dtype=str(dtype), attn_implementation="sdpa", tiny=args.tiny,
        reps=args.reps, warmup=args.warmup,
        method=("eager Hugging Face forward, random weights, DynamicCache cropped back to the prefix after "
                "each pass; times from the start of the pass (CUDA events on a GPU, host clock on a CPU); "
                "medians over reps passes; prefill_ms with logits of the last position only"),
        models={},
    )
    log(f"{result['device']}, torch {torch.__version__}, transformers {transformers.__version__}, {dtype}")
    with torch.no_grad():
        for name in args.shapes:
            t0 = time.perf_counter()
            model = build_model(name, args.tiny, dtype, device)
            build_s = time.perf_counter() - t0
            log(f"{name}: {type(model).__name__}, {model.config.num_hidden_layers} layers, built in {build_s:.1f} s")
            runs = profile_shape(model, args.prefixes, args.gammas, args.reps, args.warmup, clock, device, log)
            result["models"][name] = dict(
                model_class=type(model).__name__, layers=model.config.num_hidden_layers,
                params=sum(p.numel() for p in model.parameters()), build_s=build_s, runs=runs)
            write_json(args.out, result)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()

        if args.static_compile:
            def deadline() -> str | None:
                elapsed = time.perf_counter() - launched
                limit = args.compile_start_by_s
                return f"{elapsed:.0f} s elapsed, past --compile-start-by-s {limit:.0f}" if elapsed > limit else None

            log(f"{STATIC_SHAPE}: static cache, P={args.static_prefix}, eager vs torch.compile(reduce-overhead)")
            model = build_model(STATIC_SHAPE, args.tiny, dtype, device)
            section = dict(shape=STATIC_SHAPE, prefix=args.static_prefix, model_class=type(model).__name__)
            try:
                section |= profile_static_compiled(model, args.static_prefix, STATIC_GAMMAS, args.reps, clock,
                                                   device, deadline, log)
            except Exception as exc:  # optional section: keep the eager results, say what broke
                section["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                log(f"static/compiled section failed: {section['error']}")
            result["static_compiled"] = section
            write_json(args.out, result)

    result["elapsed_s"] = round(time.perf_counter() - launched, 1)
    write_json(args.out, result)
    print_summary(result)
    return 0


def print_summary(result: dict) -> None:
    """The headline table: total_ms per gamma and prefix, and the share of the pass at half depth."""
    for name, model in result["models"].items():
        print(f"\n{name} ({model['layers']} layers) total_ms [half-depth fraction] head_ms")
        for run in model["runs"]:
            cum = run["cum_layer_ms"]
            frac = cum[len(cum) // 2 - 1] / run["total_ms"]
            print(f"  P={run['prefix']:5d} g={run['gamma']}  {run['total_ms']:8.3f} [{frac:.2f}]  "
                  f"{run['head_ms']:.3f}  prefill {run['prefill_ms']:.2f}")
    static = result.get("static_compiled")
    if static:
        print(f"\nstatic cache {static['shape']} P={static['prefix']}: {static.get('error', '')}")
        for run in static.get("runs", []):
            compiled = f"{run['compiled_ms'][0]:.3f} ms" if "compiled_ms" in run else f"skipped: {run['skipped']}"
            print(f"  tokens={run['tokens']} eager {run['eager_ms'][0]:.3f} ms, compiled {compiled}")


if __name__ == "__main__":
    sys.exit(main())
