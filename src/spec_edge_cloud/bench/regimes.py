"""Named timing regimes for the benchmarks, and what the paper reports for them.

`native` means this machine's own speed (no emulation). Any other name is a timing profile
(decoding/timing.py): the shipped ones in src/spec_edge_cloud/profiles/ (the paper's
`go2-orin-a100` and `nano-a100`, ...), a path to a profile JSON, or `h100`, which is built here
from the per-layer GPU measurement in data/profiles/gpu_h100_eager.json: the Go2's Orin draft and
link (from the go2-orin-a100 profile) in front of an eagerly run Qwen2-VL-7B-shaped target on an H100.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..decoding.timing import TimingProfile

NATIVE = "native"
REPO = Path(__file__).resolve().parents[3]
GPU_PROFILE = REPO / "data" / "profiles" / "gpu_h100_eager.json"
H100 = "h100"
H100_MODEL, H100_PREFIX, H100_ROBOT = "qwen2-vl-7b-lm", 512, "go2-orin-a100"

# What the paper reports (latency reductions against cloud autoregressive decoding).
PAPER = {
    "go2-orin-a100": {"spec-ee-pre": 0.21, "note": "Qwen2-VL-2B on a Jetson Orin drafting for Qwen2-VL-7B "
                      "on an A100, γ = 4: 21% faster than cloud decoding"},
    "nano-a100": {"spec-ee-pre": 0.35, "predraft_gain": 0.11, "note": "Vicuna-68M on a Jetson Nano drafting "
                  "for Llama-2-7B on an A100: up to 35% lower latency than cloud decoding, 11% more from "
                  "pre-drafting"},
}


def h100_profile(path: Path = GPU_PROFILE, model: str = H100_MODEL, prefix: int = H100_PREFIX,
                 robot: str = H100_ROBOT) -> TimingProfile:
    """The measured H100 target (eager, per layer, for each pass size) behind the robot's draft and link."""
    if not path.is_file():
        raise FileNotFoundError(f"GPU profile {path} not found (made by benchmarks/gpu_profile.py)")
    data = json.loads(path.read_text())
    if model not in data.get("models", {}):
        raise ValueError(f"{path} has no model {model!r} (has {sorted(data.get('models', {}))})")
    runs = [r for r in data["models"][model]["runs"] if r["prefix"] == prefix]
    if not runs:
        raise ValueError(f"{path}: no runs of {model} at prefix {prefix}")
    base = TimingProfile.load(robot)
    return TimingProfile(
        name=H100, description=f"{base.draft_per_token_ms:g} ms/token draft ({robot}) and {base.rtt_ms:g} ms "
        f"link; target: {model} on an {data.get('device', 'H100')}, eager, {prefix} cached tokens "
        f"(data/profiles/{path.name})",
        draft_per_token_ms=base.draft_per_token_ms, draft_prefill_ms=base.draft_prefill_ms,
        target_prefill_ms=runs[0]["prefill_ms"],
        target_cum_layer_ms={r["tokens"]: r["cum_layer_ms"] for r in runs},
        rtt_ms=base.rtt_ms, jitter_ms=base.jitter_ms)


def load_regime(name: str) -> TimingProfile | None:
    """None for `native`; else the regime's timing profile (FileNotFoundError names the shipped ones)."""
    if name == NATIVE:
        return None
    if name == H100:
        return h100_profile()
    return TimingProfile.load(name)
