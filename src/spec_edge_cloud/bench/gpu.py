"""`bench gpu`: verification passes of the real engine, eager and compiled, timed where they run.

What one run measures, for each precision, each mode (eager; compiled: CUDA graphs of the segments
between exits), each number of rows (robots batched into one pass) and each draft length gamma:
the pass of gamma + 1 tokens per row over a prefix of `prefix` cached tokens (the engine's own
`verify`, static cache, exits at 1/4, 1/2 and 3/4 of the depth), as medians over `reps` passes:
  - pass_ms: from the call to the final verdict on the host (what FINAL reports as compute);
  - early_ms[layer]: when each exit's EARLY was handed on (what a server puts on the socket then);
  - bound_ms and bound_ratio: reading the weights once (their bytes over the device's measured copy
    bandwidth) and pass_ms over it: how close the pass is to the memory-bound floor.
Every pass rolls its rows back to the prefix, so each sees the same prefix.

Weights are random (timing does not depend on their values) unless `--target DIR` names a checkpoint.
The Qwen2-VL shapes are their language models as Qwen2ForCausalLM (1-D instead of multimodal rotary
positions, the same matrices). `tiny` is a 2-layer shape that runs anywhere in seconds.

`--profile-out` writes a timing profile (decoding/timing.py's format) of the single-row passes: the
early times at the exits and the pass time at the last layer, linear in between, so `--target-profile`
can replace an emulated regime by this measured one.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from ..decoding.static_cache import CacheConfig
from ..decoding.target import TargetEngine, VerifyRequest
from ..modeling.bundle import ModelBundle, Prompt, load_bundle
from ..modeling.exit_heads import ExitHeads, default_exit_layers
from ..modeling.layers import decoder_parts
from ..modeling.placement import Placement

# Published shapes (Llama-2-7B; the language models of Qwen2-VL-7B-Instruct and Qwen2-VL-2B-Instruct).
SHAPES: dict[str, tuple[str, dict]] = {
    "llama-2-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                 max_position_embeddings=4096, rms_norm_eps=1e-5)),
    "qwen2-vl-7b": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                  num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                  max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                                  tie_word_embeddings=False)),
    "qwen2-vl-2b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                  num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                  max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                                  tie_word_embeddings=True)),
    "tiny": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=256, max_position_embeddings=2048)),
}


def random_bundle(shape: str, placement: Placement) -> ModelBundle:
    """A randomly initialised causal LM of a published shape, allocated on the device directly."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from ..modeling.tiny import word_vocab
    from ..modeling.tokenizer import build_word_tokenizer
    family, sizes = SHAPES[shape]
    config = (LlamaConfig if family == "llama" else Qwen2Config)(**sizes)
    torch.manual_seed(0)
    with torch.device(placement.device):
        model = AutoModelForCausalLM.from_config(config, dtype=placement.torch_dtype, attn_implementation="sdpa")
    # ids are fed directly: a small tokenizer gives the bundle its special tokens
    return ModelBundle(model, build_word_tokenizer(word_vocab(8)), path=Path(f"random:{shape}"))


def copy_bandwidth(device: torch.device, mib: int = 1024) -> float:
    """Bytes per second the device reads when copying a large buffer (read + write counted)."""
    n = mib * (1 << 20) // 4 if device.type == "cuda" else 64 * (1 << 20) // 4
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / min(times[1:])


def weight_bytes(bundle: ModelBundle) -> int:
    """Bytes a pass reads from the weights: all but the token embeddings (a few rows are gathered)."""
    embed = bundle.model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in bundle.model.parameters())
    tied = embed is bundle.model.get_output_embeddings().weight
    return total if tied else total - embed.numel() * embed.element_size()


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def time_passes(engine: TargetEngine, rows: int, gamma: int, prefix: int, reps: int, warmup: int,
                gen: torch.Generator) -> dict:
    """`reps` timed passes of `rows` rows of gamma + 1 tokens over `prefix` cached tokens."""
    vocab, image = engine.vocab_size, engine.bundle.image_token_id
    seqs, prefill = [], []
    for _ in range(rows):  # random text: no special token, no image placeholder
        ids = [8 if t == image else t for t in torch.randint(8, vocab, (prefix,), generator=gen).tolist()]
        seq = engine.start(Prompt(ids))
        prefill.append(seq.prefill() * 1e3)
        seqs.append(seq)
    pass_ms: list[float] = []
    early: dict[int, list[float]] = {}
    for rep in range(warmup + reps):
        drafts = [torch.randint(8, vocab, (gamma,), generator=gen).tolist() for _ in seqs]
        results = engine.verify([VerifyRequest(s, d) for s, d in zip(seqs, drafts)])
        for s in seqs:
            s.seq.truncate(prefix)  # the next pass sees the same prefix
        if rep >= warmup:
            pass_ms.append(results[0].seconds * 1e3)
            for e in results[0].exits:
                early.setdefault(e.layer, []).append(e.at * 1e3)
    return dict(rows=rows, gamma=gamma, tokens=gamma + 1, pass_ms=_median(pass_ms), pass_ms_min=round(min(pass_ms), 4),
                pass_ms_max=round(max(pass_ms), 4), early_ms={str(k): _median(v) for k, v in sorted(early.items())},
                prefill_ms=_median(prefill))


def run_gpu_bench(target: str | None, shape: str | None, placements: list[Placement], draft_lengths: list[int],
                  rows: list[int], compile_modes: list[bool], prefix: int = 512, reps: int = 10, warmup: int = 3,
                  log: Callable[[str], None] = print) -> dict:
    result = dict(torch=torch.__version__, python=platform.python_version(), prefix=prefix, reps=reps,
                  warmup=warmup, target=target or f"random weights, shape {shape}", runs=[])
    for placement in placements:
        bundle = load_bundle(target, placement) if target else random_bundle(shape, placement)
        device = bundle.device
        result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else \
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        parts_layers = decoder_parts(bundle.model).num_layers
        heads = ExitHeads(default_exit_layers(parts_layers), bundle.hidden_size, 64)
        bandwidth = copy_bandwidth(device)
        bound_ms = weight_bytes(bundle) / bandwidth * 1e3
        log(f"{bundle.path} on {placement}: {parts_layers} layers, weights {weight_bytes(bundle) / 1e9:.2f} GB, "
            f"copy bandwidth {bandwidth / 1e9:.0f} GB/s, weight-read bound {bound_ms:.3f} ms")
        length = prefix + max(draft_lengths) + 8
        if length >= bundle.max_positions:
            raise ValueError(f"--prefix {prefix} and --draft-lengths up to {max(draft_lengths)} do not fit the "
                             f"model's context of {bundle.max_positions}")
        for compiled in compile_modes:
            engine = TargetEngine(bundle, heads, cache=CacheConfig("static", max(rows), length, compiled))
            gen = torch.Generator().manual_seed(1)
            for n in rows:
                for gamma in draft_lengths:
                    run = time_passes(engine, n, gamma, prefix, reps, warmup, gen)
                    run.update(dtype=placement.dtype, compiled=compiled, layers=parts_layers,
                               bound_ms=round(bound_ms, 4), bound_ratio=round(run["pass_ms"] / bound_ms, 3))
                    result["runs"].append(run)
                    first = next(iter(run["early_ms"].values()), None)
                    log(f"  {placement.dtype} {'compiled' if compiled else 'eager'} rows={n:2d} gamma={gamma}: pass "
                        f"{run['pass_ms']:9.3f} ms ({run['bound_ratio']:.1f}x bound), first EARLY "
                        f"{first if first is not None else '-'} ms")
            del engine
        del bundle
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def timing_profile(result: dict, name: str) -> dict:
    """A profile `--target-profile` accepts: single-row passes of the first precision measured, in the
    fastest mode measured."""
    dtype = result["runs"][0]["dtype"]
    single = [r for r in result["runs"] if r["rows"] == 1 and r["dtype"] == dtype]
    compiled = any(r["compiled"] for r in single)
    single = [r for r in single if r["compiled"] == compiled]
    cum = {}
    for r in single:
        layers = r["layers"]
        points = [(0, 0.0)] + sorted((int(k), v) for k, v in r["early_ms"].items()) + [(layers, r["pass_ms"])]
        cum[str(r["tokens"])] = [round(_interpolate(points, layer), 4) for layer in range(1, layers + 1)]
    mode = "compiled (CUDA graphs per segment)" if compiled else "eager"
    return {"name": name,
            "description": f"MEASURED by `spec-edge-cloud bench gpu` on {result['device']}: {result['target']}, "
                           f"{dtype}, {mode}, one row, {result['prefix']} cached tokens; cum_layer_ms are the EARLY times at "
                           "the exit layers and the pass time at the last layer, linear in between. The draft and "
                           "the link are not part of this measurement.",
            "draft": {"per_token_ms": 0.0, "prefill_ms": 0.0},
            "target": {"layers": single[0]["layers"], "prefill_ms": single[0]["prefill_ms"], "cum_layer_ms": cum}}


def _interpolate(points: list[tuple[int, float]], layer: int) -> float:
    for (a, ta), (b, tb) in zip(points, points[1:]):
        if a <= layer <= b:
            return ta + (tb - ta) * (layer - a) / (b - a) if b > a else tb
    return points[-1][1]


def summary(result: dict) -> str:
    """Passes side by side: one line per (rows, gamma), a column per precision and mode."""
    columns = sorted({(r["dtype"], r["compiled"]) for r in result["runs"]})
    lines = [f"{result['target']} on {result['device']}, {result['prefix']} cached tokens; pass ms "
             "(x weight-read bound) [first EARLY ms]",
             "rows gamma  " + "  ".join(f"{d} {'compiled' if c else 'eager':>8}".rjust(30) for d, c in columns)]
    for n, gamma in sorted({(r["rows"], r["gamma"]) for r in result["runs"]}):
        cells = []
        for dtype, compiled in columns:
            run = next((r for r in result["runs"] if (r["rows"], r["gamma"], r["dtype"], r["compiled"])
                        == (n, gamma, dtype, compiled)), None)
            first = next(iter(run["early_ms"].values()), float("nan")) if run else float("nan")
            cells.append((f"{run['pass_ms']:.2f} ({run['bound_ratio']:.1f}x) [{first:.2f}]" if run else "-").rjust(30))
        lines.append(f"{n:4d} {gamma:5d}  " + "  ".join(cells))
    return "\n".join(lines)


def write(result: dict, json_path: Path | None, profile_path: Path | None, profile_name: str) -> None:
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1))
    if profile_path:
        profile_path.parent.mkdir(parents=True, exist_ok=True)
        profile_path.write_text(json.dumps(timing_profile(result, profile_name), indent=1))
