"""The decoding modes and `DecodeConfig`, the one home of every decoding setting.

Each field carries its default and its help text; the CLI flags (`add_arguments`), the draft node's
ROS parameters and config/robot.yaml are derived from these fields, so a setting has one name, one
default and one validation wherever it is set.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

MODES = ("edge", "cloud", "spec", "spec-ee", "spec-ee-pre", "adaptive")
GREEDY_LOSSLESS = ("cloud", "spec", "spec-ee", "spec-ee-pre", "adaptive")  # equal the target alone


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class DecodeConfig:
    mode: str = _setting("spec-ee-pre", "edge | cloud | spec | spec-ee | spec-ee-pre | adaptive")
    gamma: int = _setting(4, "draft length per round (adaptive: the starting one)")
    max_new_tokens: int = _setting(48, "tokens per response at most")
    temperature: float = _setting(0.0, "0: greedy (the target's own answer, token for token)")
    seed: int = _setting(0, "sampling seed (temperature > 0)")
    exit_threshold: float = _setting(0.5, "early verdicts below this exit confidence are not sent")
    exit_layers: tuple[int, ...] = _setting((), "exits to ask for early verdicts (empty: every exit)")
    stop: tuple[str, ...] = _setting((), "strings that end the response")
    draft_min_confidence: float = _setting(0.0, "the draft stops a round at a token below this probability")
    draft_top_k: int = _setting(64, "sampling: the draft samples among its k likeliest tokens, and only they go "
                                    "up (0: the whole vocabulary)")
    draft_top_p: float = _setting(1.0, "sampling: ... among the fewest holding this much probability (1: no cut)")
    deadline_s: float = _setting(10.0, "no word from the cloud for this long: finish on the robot, unverified")

    def __post_init__(self) -> None:
        self.exit_layers = tuple(int(x) for x in self.exit_layers or ())
        self.stop = tuple(self.stop or ())
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("gamma", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}"
                                )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        for name in ("exit_threshold", "draft_min_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.draft_top_k < 0 or not 0.0 < self.draft_top_p <= 1.0:
            raise ValueError(f"draft_top_k must be >= 0 and draft_top_p in (0, 1], got {self.draft_top_k}, "
                             f"{self.draft_top_p}")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, got {self.deadline_s}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def early_verdicts(self) -> bool:
        return self.mode in ("spec-ee", "spec-ee-pre", "adaptive")

    @property
    def predraft(self) -> bool:
        return self.mode in ("spec-ee-pre", "adaptive")

    @property
    def wire_exit_layers(self) -> list[int] | None:
        """What a DRAFT asks the cloud for: [] no early verdicts, None every exit, else those exits."""
        if not self.early_verdicts:
            return []
        return list(self.exit_layers) or None

    # -- derived interfaces ------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """{field: default}, in declaration order (the draft node declares its parameters from it)."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (),
                      only: tuple[str, ...] | None = None) -> None:
        """One `--flag` per field (`max_new_tokens` -> `--max-new-tokens`), lists comma-separated;
        `only`/`exclude` pick the fields a command takes."""
        for f in fields(cls):
            if f.name in exclude or (only is not None and f.name not in only):
                continue
            default = f.default
            kind = type(f.default)
            flag = "--" + f.name.replace("_", "-")
            if kind is tuple:
                item = int if f.name == "exit_layers" else str
                parser.add_argument(flag, type=_comma_list(item), default=default, help=f.metadata["help"])
            elif f.name == "mode":
                parser.add_argument(flag, choices=MODES, default=default, help=f.metadata["help"])
            else:
                parser.add_argument(flag, type=kind, default=default, help=f.metadata["help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> "DecodeConfig":
        """The config the flags of `add_arguments` describe (fields not on the command keep defaults)."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**{**given, **overrides})


def _comma_list(item: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(item(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None
    parse.__name__ = f"{item.__name__} list"
    return parse
