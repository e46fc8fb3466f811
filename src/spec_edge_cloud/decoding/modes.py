"""The decoding modes and their knobs: one code path (`client.SpecClient`), selected by config."""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("edge", "cloud", "spec", "spec-ee", "spec-ee-pre", "adaptive")
GREEDY_LOSSLESS = ("cloud", "spec", "spec-ee", "spec-ee-pre", "adaptive")  # equal the target alone


@dataclass
class DecodeConfig:
    mode: str = "spec-ee-pre"
    gamma: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    exit_threshold: float = 0.5
    exit_layers: list[int] | None = None      # None: every exit the target has
    stop: list[str] = field(default_factory=list)
    draft_min_confidence: float = 0.0
    deadline_s: float = 10.0                  # no reply for this long: finish in edge mode

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.gamma <= 0:
            raise ValueError(f"draft length gamma must be positive, got {self.gamma}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def early_verdicts(self) -> bool:
        return self.mode in ("spec-ee", "spec-ee-pre", "adaptive")

    @property
    def predraft(self) -> bool:
        return self.mode in ("spec-ee-pre", "adaptive")
