"""Timing emulation: pad real computation to the times of a profile measured elsewhere.

A profile gives the draft's time per token and the target's cumulative time at the end of each
decoder layer for a pass of n tokens (from a GPU measurement, or a paper's figures). The pacer
sleeps at each layer hook until the profile's time for that depth, so an EARLY leaves when it would
on that hardware, with the real models, protocol and link. Everything that uses a profile reports
its timings as emulated. Real compute slower than the profile cannot be hidden: `late_s` counts it.
"""
from __future__ import annotations

import bisect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclass
class TimingProfile:
    name: str
    description: str = ""
    draft_per_token_ms: float = 0.0
    draft_prefill_ms: float = 0.0
    target_prefill_ms: float = 0.0
    target_cum_layer_ms: dict[int, list[float]] = field(default_factory=dict)  # tokens in pass -> cum ms
    rtt_ms: float | None = None
    jitter_ms: float = 0.0

    @classmethod
    def load(cls, name_or_path: str | Path) -> "TimingProfile":
        path = Path(name_or_path)
        if not path.exists():
            path = PROFILE_DIR / f"{name_or_path}.json"
        if not path.exists():
            known = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
            raise FileNotFoundError(f"timing profile {name_or_path!r} not found (shipped: {known})")
        d = json.loads(path.read_text())
        target = d.get("target", {})
        return cls(name=d.get("name", path.stem), description=d.get("description", ""),
                   draft_per_token_ms=d.get("draft", {}).get("per_token_ms", 0.0),
                   draft_prefill_ms=d.get("draft", {}).get("prefill_ms", 0.0),
                   target_prefill_ms=target.get("prefill_ms", 0.0),
                   target_cum_layer_ms={int(k): v for k, v in target.get("cum_layer_ms", {}).items()},
                   rtt_ms=d.get("link", {}).get("rtt_ms"), jitter_ms=d.get("link", {}).get("jitter_ms", 0.0))

    def save(self, path: Path) -> Path:
        """Write this profile as `load` reads it (for a verifier process: `--target-profile PATH`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "name": self.name, "description": self.description,
            "draft": {"per_token_ms": self.draft_per_token_ms, "prefill_ms": self.draft_prefill_ms},
            "target": {"prefill_ms": self.target_prefill_ms,
                       "cum_layer_ms": {str(k): v for k, v in self.target_cum_layer_ms.items()}},
            "link": {"rtt_ms": self.rtt_ms or 0.0, "jitter_ms": self.jitter_ms}}))
        return path

    def target_ms(self, fraction: float, tokens: int) -> float:
        """Cumulative target time at `fraction` of the depth for a pass of `tokens` tokens."""
        if not self.target_cum_layer_ms:
            return 0.0
        sizes = sorted(self.target_cum_layer_ms)
        i = bisect.bisect_left(sizes, tokens)
        lo, hi = sizes[max(0, min(i - 1, len(sizes) - 1))], sizes[min(i, len(sizes) - 1)]
        a, b = self._at(lo, fraction), self._at(hi, fraction)
        return a if hi == lo else a + (b - a) * (tokens - lo) / (hi - lo)

    def _at(self, tokens: int, fraction: float) -> float:
        cum = self.target_cum_layer_ms[tokens]
        x = fraction * len(cum)  # layer index, 1-based, fractional
        j = int(x)
        if j <= 0:
            return cum[0] * x
        if j >= len(cum):
            return cum[-1]
        return cum[j - 1] + (cum[j] - cum[j - 1]) * (x - j)


class Pacer:
    """Sleeps so that real passes take the profile's time; hooked into the engines."""

    def __init__(self, profile: TimingProfile, num_layers: int = 1):
        self.profile = profile
        self.num_layers = num_layers
        self.late_s = 0.0

    def _until(self, t0: float, ms: float) -> None:
        delay = t0 + ms / 1000 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            self.late_s += -delay

    def target_layer(self, t0: float, layer: int, tokens: int) -> None:
        self._until(t0, self.profile.target_ms(layer / self.num_layers, tokens))

    def target_done(self, t0: float, tokens: int) -> None:
        self._until(t0, self.profile.target_ms(1.0, tokens))

    def target_prefill(self, t0: float) -> None:
        self._until(t0, self.profile.target_prefill_ms)

    def draft_prefill(self, t0: float) -> None:
        self._until(t0, self.profile.draft_prefill_ms)

    def draft_token(self, t0: float, count: int) -> None:
        self._until(t0, self.profile.draft_per_token_ms * count)
