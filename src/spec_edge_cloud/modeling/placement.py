"""Where a model runs and in what precision: one resolver for every command that loads a model.

`auto` means what a deployment wants without being told: the first GPU in bfloat16 when torch sees
one, else the CPU in float32 (bfloat16 matmuls on a CPU without AMX are slower than float32, and
float32 keeps the CPU tests' numerics). Everything a round touches (model, exit heads, image
tensors, draft distributions) lives on the placement's device; only verdicts cross to the host.

torch is imported inside the functions: the CLI adds these flags without importing it.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda:N"
    dtype: str   # one of DTYPES

    @property
    def torch_dtype(self):
        import torch
        return getattr(torch, self.dtype)

    def __str__(self) -> str:
        return f"{self.device} {self.dtype}"


CPU_FP32 = Placement("cpu", "float32")


def resolve_placement(device: str | None = "auto", dtype: str | None = "auto") -> Placement:
    """`--device auto|cpu|cuda|cuda:N` and `--dtype auto|float32|bfloat16|float16` -> a Placement.

    Asking for a GPU that is not there is an error, not a silent fall back to the CPU: a 7B target
    on the CPU is seconds per token, which a user should learn at start-up.
    """
    import torch

    device = (device or "auto").strip().lower()
    dtype = (dtype or "auto").strip().lower()
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValueError(f"--device {device!r}: expected one of auto, cpu, cuda, cuda:N")
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: torch sees no CUDA device here (use --device cpu or auto)")
        if int(index) >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        device = f"cuda:{int(index)}"
    elif device != "cpu":
        raise ValueError(f"--device {device!r}: expected one of auto, cpu, cuda, cuda:N")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    elif dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected one of auto, {', '.join(DTYPES)}")
    return Placement(device, dtype)


def add_placement_arguments(p: argparse.ArgumentParser) -> None:
    """The two flags, worded once for every command that loads a model."""
    p.add_argument("--device", default=None,
                   help="auto (default: the first GPU if any, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None,
                   help="auto (default: bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16")


def placement_from_args(args: argparse.Namespace) -> Placement:
    return resolve_placement(args.device, args.dtype)


def autocast(placement: Placement) -> contextlib.AbstractContextManager:
    """Training in a placement: weights and optimiser stay float32 (what the recipes save), forward
    passes run in the placement's precision (mixed precision); float32 changes nothing."""
    import torch
    if placement.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(placement.device).type, dtype=placement.torch_dtype)
