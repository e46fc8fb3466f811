"""What robot and cloud say to each other: one msgspec Struct per message, carrying its wire bounds.

These classes are the protocol's one definition. The decoding core builds and reads them; the
transport (`transport/protocol.py`) encodes them as they are (a Struct is a map of its fields) and
decodes frames straight into them, msgspec checking every type, range and length in C while it
decodes. The bounds therefore bind what arrives from the other side; a message built in this
process is trusted as it is. What a type cannot say (printable session ids, a tensor's size and
values, JPEG headers) the transport checks after decoding.

Every message names its session (one response of one robot). Rounds are numbered by the robot and
only grow, so the cloud can ignore anything older than what it has already handled, and the robot
ignores verdicts for rounds it no longer waits for.
"""
from __future__ import annotations

from typing import Annotated

import msgspec
import torch
from msgspec import Meta, Struct

MAX_LIST = 1 << 16               # longest list of ids in any field

Id = Annotated[int, Meta(ge=0, le=2**31 - 1)]                # a token id
Count = Annotated[int, Meta(ge=0, le=2**53)]                 # rounds, positions, numbers of tokens
Layer = Annotated[int, Meta(ge=0, le=4096)]
Seconds = Annotated[float, Meta(ge=0.0, le=1e9)]
Real = Annotated[float, Meta(ge=-1e30, le=1e30)]             # any finite number
Session = Annotated[str, Meta(min_length=1, max_length=64)]  # and printable, without '/' (checked after)
Ids = Annotated[list[Id], Meta(max_length=MAX_LIST)]
Layers = Annotated[list[Layer], Meta(max_length=256)]
Triple = tuple[Count, Count, Count]                          # (round or layer, accepted, next_token)


# robot -> cloud ---------------------------------------------------------------------------------
class Start(Struct):
    """PREFILL: the prompt (ids + image) of a new response.

    `image` crosses the wire as JPEG bytes (the prompt's own, `Prompt.jpeg`, so the cloud decodes
    the very pixels the robot drafted on); whoever hands the message to the verifier service puts
    the decoded RGB pixels there first (the server after decoding, the in-process link as drafted).
    """
    session: Session
    input_ids: Ids
    image: bytes | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1e3)] = 0.0
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] = 0


Support = Annotated[list[Ids], Meta(max_length=64)]
MAX_BRANCHES = 8                 # branches of one fan-out DRAFT, alternatives of one EARLY


class Branch(Struct):
    """Another branch of a fan-out pre-draft: `tokens` after `base`, drafted on the verdict `assumes`
    (the fields mean what the DRAFT's own do)."""
    assumes: Triple
    base: Count
    tokens: Ids
    probs: torch.Tensor | None = None
    support: Support | None = None


class DraftRequest(Struct):
    """DRAFT: verify `tokens` after the first `base` tokens of the sequence (prompt included).

    `assumes=(round, accepted, next_token)` marks a pre-draft made on a provisional verdict: the cloud
    verifies it only if that round's final verdict is the same, and drops it otherwise. A fan-out
    pre-draft carries further `branches`, each on another verdict of the same round: the cloud
    verifies the one branch the final verdict matches (`chosen`) and drops the others.
    `exit_layers` = [] asks for no early verdicts (plain `spec`); None means all exits.
    `alternatives`: how many other likely verdicts each EARLY of this round should carry (fan-out).
    Sampling: `probs` holds the draft's distributions, row i over `support[i]`'s token ids when the
    draft sent only its likeliest tokens (None: over the whole vocabulary).
    """
    session: Session
    round: Count
    base: Count
    tokens: Ids
    probs: torch.Tensor | None = None
    assumes: Triple | None = None
    exit_layers: Layers | None = None
    exit_threshold: Annotated[float, Meta(ge=-1e3, le=1e3)] = 0.0
    support: Support | None = None
    branches: Annotated[list[Branch], Meta(max_length=MAX_BRANCHES)] = []
    alternatives: Annotated[int, Meta(ge=0, le=MAX_BRANCHES)] = 0

    def each_branch(self) -> list["DraftRequest"]:
        """Every branch as a DRAFT of its own (this one first; the first has no `branches` left)."""
        first = msgspec.structs.replace(self, branches=[]) if self.branches else self
        return [first] + [msgspec.structs.replace(first, assumes=b.assumes, base=b.base, tokens=b.tokens,
                                                  probs=b.probs, support=b.support) for b in self.branches]

    def chosen(self, final: tuple | None) -> "DraftRequest | None":
        """What the cloud verifies once `final` (round, accepted, next) is the newest final verdict:
        this DRAFT if it assumes nothing, else its branch assuming exactly `final`, as a plain DRAFT
        (no `assumes`, no branches); None if no branch does (all dropped)."""
        if self.assumes is None:
            return self
        for branch in self.each_branch():
            if final is not None and tuple(branch.assumes) == tuple(final):
                return msgspec.structs.replace(branch, assumes=None)
        return None


class Generate(Struct):
    """Cloud decoding: the target continues alone after `base` tokens, streaming each token."""
    session: Session
    round: Count
    base: Count
    max_new_tokens: Annotated[int, Meta(ge=0, le=1 << 20)]
    stop_ids: Annotated[list[Id], Meta(max_length=1024)] = []


class Cancel(Struct):
    session: Session


class End(Struct):
    session: Session


class Ping(Struct):
    sent: Real


# cloud -> robot ---------------------------------------------------------------------------------
class Early(Struct):
    """A provisional verdict from an exit head, sent while the pass goes on; with the other verdicts
    the exit finds likely (`alternatives`, when the DRAFT asked for them) for fan-out pre-drafting."""
    session: Session
    round: Count
    layer: Layer
    accepted: Count
    next_token: Id
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)]
    alternatives: Annotated[list[tuple[Count, Id]], Meta(max_length=MAX_BRANCHES)] = []  # (accepted, next), likeliest first


class Final(Struct):
    """The final layer's verdict on a round: `accepted` draft tokens kept, then `next_token`.
    `exits` holds each exit's (layer, accepted, next) for agreement figures, `exit_percent` each
    one's confidence in whole percent, rounded down, in the same order (what calibrates the robot's
    exit thresholds, whose candidates are whole percents: one byte each on the wire, not nine);
    `rows` is how many robots' rounds shared the (batched) pass whose time `compute_s` is."""
    session: Session
    round: Count
    accepted: Count
    next_token: Id
    compute_s: Seconds
    tokens_in_pass: Count
    exits: Annotated[list[Triple], Meta(max_length=256)] = []
    rows: Annotated[int, Meta(ge=1, le=4096)] = 1
    exit_percent: Annotated[list[Annotated[int, Meta(ge=0, le=100)]], Meta(max_length=256)] = []


class Token(Struct):
    """One token of cloud decoding (Generate)."""
    session: Session
    round: Count
    index: Count
    token: Id
    compute_s: Seconds


class Error(Struct):
    code: Annotated[str, Meta(max_length=64)]
    text: Annotated[str, Meta(max_length=4096)]
    session: Session | None = None


class Pong(Struct):
    sent: Real
