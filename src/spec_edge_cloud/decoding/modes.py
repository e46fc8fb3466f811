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
# reuse_answers -1 (auto): adaptive drafts from this many recent answers per prompt (docs/benchmarks.md,
# "Issue 17's options against the paper's method": measured faster there); the other modes none
AUTO_REUSE_ANSWERS = 2


def setting(default: Any, help: str, range: tuple[float | None, float | None] | None = None) -> Any:
    """A config field with its help text and, for a number, its inclusive range (None: open end):
    `check_ranges` validates it, and the ROS parameter declared from the field carries it."""
    return field(default=default, metadata={"help": help, "range": range})


def check_ranges(config: Any) -> None:
    """ValueError naming the first field of the dataclass `config` outside its `range`."""
    for f in fields(config):
        if f.metadata.get("range") is None:
            continue
        low, high = f.metadata["range"]
        value = getattr(config, f.name)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise ValueError(f"{f.name} must be in {bounds}, got {value!r}")


@dataclass
class DecodeConfig:
    mode: str = setting("spec-ee-pre", "edge | cloud | spec | spec-ee | spec-ee-pre | adaptive")
    gamma: int = setting(4, "draft length per round (adaptive: the starting one)", (1, None))
    max_new_tokens: int = setting(48, "tokens per response at most", (1, None))
    temperature: float = setting(0.0, "0: greedy (the target's own answer, token for token)", (0.0, None))
    seed: int = setting(0, "sampling seed (temperature > 0)", (0, None))
    exit_threshold: float = setting(0.5, "early verdicts below this exit confidence are not sent", (0.0, 1.0))
    exit_layers: tuple[int, ...] = setting((), "exits to ask for early verdicts (empty: every exit)")
    exit_miss_target: float = setting(0.1, "adaptive: trust an exit's early verdicts only at confidences where the "
                                           "bound on how often the final verdict contradicts them is below this, "
                                           "calibrated online (0: off, exit_threshold as in the other modes)",
                                      (0.0, 0.99))
    exit_bound_confidence: float = setting(0.9, "adaptive: the confidence with which that bound (Wilson score) holds",
                                           (0.5, 0.999))
    predraft_min_hit: float = setting(0.3, "adaptive: pre-draft, without showing it, on an early verdict not "
                                           "trusted to be shown where the exit's estimated hit rate at its "
                                           "confidence reaches this and the break-even of the measured timings "
                                           "(0: off, pre-draft only on trusted verdicts)", (0.0, 1.0))
    stop: tuple[str, ...] = setting((), "strings that end the response")
    draft_min_confidence: float = setting(0.0, "the draft stops a round at a token below this probability",
                                          (0.0, 1.0))
    draft_top_k: int = setting(64, "sampling: the draft samples among its k likeliest tokens, and only they go "
                                   "up (0: the whole vocabulary)", (0, None))
    draft_top_p: float = setting(1.0, "sampling: ... among the fewest holding this much probability (1: no cut; "
                                      "above 0)", (0.0, 1.0))
    draft_grammar: str = setting("auto", "on | off | auto (on in adaptive, where the caller has the grammar): "
                                        "propose the tokens the answer's grammar forces (an action's period) "
                                        "without a draft step (the target still verifies them)")
    predraft_branches: int = setting(1, "pre-drafting on an EARLY: branches drafted while the FINAL is far off, sent in "
                                        "one DRAFT (1: the exit's verdict alone, the paper's; 2: and the exit's second "
                                        "choice; 3: and one draft token fewer; docs/design.md)", (1, 3))
    reuse_answers: int = setting(-1, "draft from the robot's last N answers to the same prompt where one continues the "
                                     "committed tokens, prompt-lookup style (0: off; -1: auto, the last "
                                     f"{AUTO_REUSE_ANSWERS} in adaptive where it measured faster, off in the others; "
                                     "docs/design.md)", (-1, 16))
    reuse_max_tokens: int = setting(16, "tokens a reused answer may propose in one round (cut at a sentence end)",
                                    (1, 64))
    deadline_s: float = setting(10.0, "no word from the cloud for this long: finish on the robot, unverified",
                                (0.001, None))

    def __post_init__(self) -> None:
        self.exit_layers = tuple(int(x) for x in self.exit_layers or ())
        self.stop = tuple(self.stop or ())
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        check_ranges(self)
        if self.draft_top_p == 0.0:
            raise ValueError("draft_top_p must be above 0 (1: no cut)")
        if self.draft_grammar not in ("on", "off", "auto"):
            raise ValueError(f"draft_grammar must be on, off or auto, got {self.draft_grammar!r}")

    @property
    def early_verdicts(self) -> bool:
        return self.mode in ("spec-ee", "spec-ee-pre", "adaptive")

    @property
    def answers_reused(self) -> int:
        """The recent answers per prompt this config drafts from (0: none): `reuse_answers`, auto resolved."""
        if self.reuse_answers < 0:
            return AUTO_REUSE_ANSWERS if self.mode == "adaptive" else 0
        return self.reuse_answers

    @property
    def grammar_wanted(self) -> bool:
        """Draft the tokens the answer's grammar forces without a draft step: on, or auto in adaptive."""
        return self.draft_grammar == "on" or (self.draft_grammar == "auto" and self.mode == "adaptive")

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
