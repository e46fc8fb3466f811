"""The action language: what the VLM may say, and what each sentence means as motion.

An answer is one observation sentence followed by action sentences, every sentence ending with
"." as a word of its own, all words lower case and separated by spaces:

    red ball ahead left . turn left 25 . walk 1.2 . stop .

The grammar is deliberately tiny and closed so that (a) a word-level tokenizer can be built from
the constants below, and (b) anything the model says that is not exactly an action is refused
rather than guessed at: the robot must never move on a misread sentence.

Actions (M: metres "%.1f" in 0.1..5.0; DEG: integer multiple of 5 in 5..180):
    walk M | back M | strafe left|right M | turn left|right DEG | stop | stand | sit
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PERIOD = "."
VERBS = ("walk", "back", "strafe", "turn", "stop", "stand", "sit")
DIRECTIONS = ("left", "right")
DISTANCE_VERBS = ("walk", "back")  # verb M
LATERAL_VERBS = ("strafe",)  # verb left|right M
TURN_VERBS = ("turn",)  # verb left|right DEG
BARE_VERBS = ("stop", "stand", "sit")  # verb alone
POSTURE_VERBS = ("stand", "sit")  # no velocity: a backend changes the robot's posture

METRES_MIN, METRES_MAX = 0.1, 5.0  # one decimal
DEGREES_MIN, DEGREES_MAX, DEGREES_STEP = 5, 180, 5

METRE_WORDS = tuple(f"{i / 10:.1f}" for i in range(round(METRES_MIN * 10), round(METRES_MAX * 10) + 1))
DEGREE_WORDS = tuple(str(d) for d in range(DEGREES_MIN, DEGREES_MAX + 1, DEGREES_STEP))
# Every word an action sentence can contain: a tokenizer needs at least these.
ACTION_WORDS = VERBS + DIRECTIONS + METRE_WORDS + DEGREE_WORDS + (PERIOD,)


class ActionError(ValueError):
    """Text that is not a well-formed action or answer; the message names the offending sentence."""


@dataclass(frozen=True)
class Action:
    """One validated action. Construction checks the grammar, so an out-of-range Action cannot exist."""

    verb: str
    direction: str | None = None
    amount: float | None = None  # metres for walk/back/strafe, degrees for turn

    def __post_init__(self) -> None:
        _validate(self)
        if self.amount is not None:  # one representation per action: 1 == 1.0, 0.1 + 0.2 == 0.3
            object.__setattr__(self, "amount", float(round(self.amount, 1)))

    def __str__(self) -> str:
        return format_action(self)


def _validate(a: Action) -> None:
    if a.verb not in VERBS:
        raise ActionError(f"unknown verb {a.verb!r} (known: {', '.join(VERBS)})")
    wants_direction = a.verb in LATERAL_VERBS + TURN_VERBS
    if wants_direction and a.direction not in DIRECTIONS:
        raise ActionError(f"{a.verb!r} needs a direction left|right, got {a.direction!r}")
    if not wants_direction and a.direction is not None:
        raise ActionError(f"{a.verb!r} takes no direction, got {a.direction!r}")
    if a.verb in BARE_VERBS:
        if a.amount is not None:
            raise ActionError(f"{a.verb!r} takes no amount, got {a.amount!r}")
        return
    if not isinstance(a.amount, (int, float)) or isinstance(a.amount, bool) or not math.isfinite(a.amount):
        raise ActionError(f"{a.verb!r} needs a finite number, got {a.amount!r}")
    if a.verb in TURN_VERBS:
        if not (DEGREES_MIN <= a.amount <= DEGREES_MAX and a.amount % DEGREES_STEP == 0):
            raise ActionError(f"turn angle must be a multiple of {DEGREES_STEP} in "
                              f"{DEGREES_MIN}..{DEGREES_MAX} degrees, got {a.amount!r}")
    elif not (METRES_MIN <= a.amount <= METRES_MAX and abs(a.amount * 10 - round(a.amount * 10)) < 1e-9):
        raise ActionError(f"{a.verb!r} distance must be {METRES_MIN}..{METRES_MAX} m with one decimal, "
                          f"got {a.amount!r}")


def format_action(a: Action) -> str:
    """Canonical text of an action, without the period: `turn left 25`, `walk 1.2`, `stop`."""
    words = [a.verb]
    if a.direction is not None:
        words.append(a.direction)
    if a.verb in TURN_VERBS:
        words.append(str(int(a.amount)))
    elif a.amount is not None:
        words.append(f"{a.amount:.1f}")
    return " ".join(words)


def parse_action(sentence: str) -> Action:
    """Parse one action sentence (a trailing " ." is allowed). Only canonical text is accepted:
    `walk 1.20`, `walk 1` and `turn left 25.0` are refused, so text and Action map one to one."""
    words = sentence.split()
    if words and words[-1] == PERIOD:
        words = words[:-1]
    if not words:
        raise ActionError(f"empty action sentence {sentence!r}")
    verb, args = words[0], words[1:]
    try:
        if verb in BARE_VERBS:
            if args:
                raise ActionError(f"{verb!r} takes no arguments")
            action = Action(verb)
        elif verb in DISTANCE_VERBS:
            if len(args) != 1:
                raise ActionError(f"expected `{verb} M`")
            action = Action(verb, amount=_number(args[0]))
        elif verb in LATERAL_VERBS + TURN_VERBS:
            if len(args) != 2:
                raise ActionError(f"expected `{verb} left|right {'DEG' if verb in TURN_VERBS else 'M'}`")
            action = Action(verb, direction=args[0], amount=_number(args[1]))
        else:
            raise ActionError(f"unknown verb {verb!r} (known: {', '.join(VERBS)})")
    except ActionError as e:
        raise ActionError(f"not an action: {sentence.strip()!r}: {e}") from None
    if format_action(action) != " ".join(words):
        raise ActionError(f"not an action: {sentence.strip()!r}: numbers must be written "
                          f"canonically, as {format_action(action)!r}")
    return action


def _number(word: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise ActionError(f"{word!r} is not a number") from None


def split_sentences(text: str) -> tuple[list[list[str]], list[str]]:
    """Split text into complete sentences (lists of words, period excluded) and the unterminated rest."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for word in text.split():
        if word == PERIOD:
            sentences.append(current)
            current = []
        else:
            current.append(word)
    return sentences, current


def forced_next(words: list[str]) -> str | None:
    """The one word the grammar allows after `words` (an answer's words so far), or None where several
    may follow. Only a sentence after the observation that is already a complete action forces
    anything: its period. A draft need not be run to propose it (decoding: `draft_grammar`)."""
    if PERIOD not in words:
        return None                       # still in the observation, which may say anything
    last = len(words) - 1 - words[::-1].index(PERIOD)
    sentence = words[last + 1:]
    if not sentence:
        return None
    try:
        parse_action(" ".join(sentence))
    except ActionError:
        return None
    return PERIOD


def parse_answer(text: str) -> tuple[str, list[Action]]:
    """Split a full answer into (observation, actions). Every sentence after the first must be an
    action; the first must be a non-empty sentence that is not itself an action."""
    sentences, rest = split_sentences(text)
    if rest:
        raise ActionError(f"unterminated sentence {' '.join(rest)!r}: every sentence must end with ' .'")
    if not sentences:
        raise ActionError(f"empty answer {text!r}: expected an observation sentence ending with ' .'")
    for words in sentences:
        if not words:
            raise ActionError(f"empty sentence (a lone '.') in {text!r}")
        upper = [w for w in words if w != w.lower()]
        if upper:
            raise ActionError(f"words must be lower case, got {upper} in {' '.join(words)!r}")
    observation = " ".join(sentences[0])
    try:
        parse_action(observation)
    except ActionError:
        pass
    else:
        raise ActionError(f"the first sentence {observation!r} is an action: an answer starts with an observation")
    return observation, [parse_action(" ".join(words)) for words in sentences[1:]]


@dataclass(frozen=True)
class MotionSpeeds:
    """Cruise speeds that turn distances into timed velocity segments (m/s, m/s, rad/s)."""

    walk: float = 0.5
    strafe: float = 0.3
    turn: float = 1.0

    def __post_init__(self) -> None:
        for name in ("walk", "strafe", "turn"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"MotionSpeeds.{name} must be a positive finite number, got {v!r}")


@dataclass(frozen=True)
class Segment:
    """Constant body twist (ROS convention: +x forward, +y left, +yaw counter-clockwise) held for `duration` s."""

    vx: float
    vy: float
    vyaw: float
    duration: float


def action_segments(action: Action, speeds: MotionSpeeds = MotionSpeeds()) -> list[Segment]:
    """Open-loop motion for one action. `stop` is a zero twist of zero duration (it ends whatever
    ran before); `stand`/`sit` yield no segments: they are posture commands for the backend."""
    v = action.verb
    if v in POSTURE_VERBS:
        return []
    if v == "stop":
        return [Segment(0.0, 0.0, 0.0, 0.0)]
    sign = 1.0 if action.direction in (None, "left") else -1.0
    if v in DISTANCE_VERBS:
        vx = speeds.walk if v == "walk" else -speeds.walk
        return [Segment(vx, 0.0, 0.0, action.amount / speeds.walk)]
    if v in LATERAL_VERBS:
        return [Segment(0.0, sign * speeds.strafe, 0.0, action.amount / speeds.strafe)]
    return [Segment(0.0, 0.0, sign * speeds.turn, math.radians(action.amount) / speeds.turn)]
