"""What robot and cloud say to each other, as plain dataclasses (the transport layer serializes them).

Every message names its session (one response of one robot). Rounds are numbered by the robot and
only grow, so the cloud can ignore anything older than what it has already handled, and the robot
ignores verdicts for rounds it no longer waits for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


# robot -> cloud ---------------------------------------------------------------------------------
@dataclass
class Start:
    """PREFILL: the prompt (ids + image) of a new response."""
    session: str
    input_ids: list[int]
    image: np.ndarray | None = None
    temperature: float = 0.0
    seed: int = 0


@dataclass
class DraftRequest:
    """DRAFT: verify `tokens` after the first `base` tokens of the sequence (prompt included).

    `assumes=(round, accepted, next_token)` marks a pre-draft made on a provisional verdict: the cloud
    verifies it only if that round's final verdict is the same, and drops it otherwise.
    `exit_layers` = [] asks for no early verdicts (plain `spec`); None means all exits.
    """
    session: str
    round: int
    base: int
    tokens: list[int]
    probs: torch.Tensor | None = None
    assumes: tuple[int, int, int] | None = None
    exit_layers: list[int] | None = None
    exit_threshold: float = 0.0
    support: list[list[int]] | None = None  # sampling: probs[i, j] is token support[i][j]'s (None: probs is dense)


@dataclass
class Generate:
    """Cloud decoding: the target continues alone after `base` tokens, streaming each token."""
    session: str
    round: int
    base: int
    max_new_tokens: int
    stop_ids: list[int] = field(default_factory=list)


@dataclass
class Cancel:
    session: str


@dataclass
class End:
    session: str


@dataclass
class Ping:
    sent: float


# cloud -> robot ---------------------------------------------------------------------------------
@dataclass
class Early:
    """A provisional verdict from an exit head, sent while the pass goes on."""
    session: str
    round: int
    layer: int
    accepted: int
    next_token: int
    confidence: float


@dataclass
class Final:
    session: str
    round: int
    accepted: int
    next_token: int
    compute_s: float
    tokens_in_pass: int
    exits: list[tuple[int, int, int]] = field(default_factory=list)  # (layer, accepted, next) per exit
    rows: int = 1  # robots' rounds verified in the same (batched) pass; compute_s is the whole pass's


@dataclass
class Token:
    """One token of cloud decoding (Generate)."""
    session: str
    round: int
    index: int
    token: int
    compute_s: float


@dataclass
class Error:
    code: str
    text: str
    session: str | None = None


@dataclass
class Pong:
    sent: float
