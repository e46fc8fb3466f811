"""Every word the simulator's tasks and the expert's observations use, in one place.

The default VLMs use a word-level tokenizer built from these lists (plus the action words of
control/actions.py), so nothing else in sim/ may invent a word. Colours map to the RGBA the
scene paints them with; they are saturated and far apart in hue so that a 128x128 head-camera
image tells them apart.
"""
from __future__ import annotations

COLOUR_RGBA: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.08, 0.08, 1.0),
    "green": (0.10, 0.70, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGBA)
OBJECTS: tuple[str, ...] = ("ball", "box", "cone", "cylinder")

# Where the goal is in the image. There is no "behind": an observation must be readable from
# the current picture, and what is behind the robot is not in it ("no red ball in view").
DIRECTION_WORDS: tuple[str, ...] = ("ahead", "left", "right")
STATUS_WORDS: tuple[str, ...] = ("no", "in", "view", "reached")
OBSERVATION_WORDS: tuple[str, ...] = COLOURS + OBJECTS + DIRECTION_WORDS + STATUS_WORDS

INSTRUCTION_WORDS: tuple[str, ...] = ("go", "to", "the")


def instruction(colour: str, obj: str) -> str:
    """The task sentence for a goal, e.g. "go to the red ball"."""
    check_goal(colour, obj)
    return f"go to the {colour} {obj}"


def check_goal(colour: str, obj: str) -> None:
    """Raise ValueError unless (colour, obj) names a goal the scene can hold."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}: expected one of {', '.join(COLOURS)}")
    if obj not in OBJECTS:
        raise ValueError(f"unknown object {obj!r}: expected one of {', '.join(OBJECTS)}")


def parse_instruction(text: str) -> tuple[str, str]:
    """(colour, object) from "go to the <colour> <object>"; ValueError on anything else."""
    words = text.strip().lower().split()
    if len(words) != 5 or words[:3] != list(INSTRUCTION_WORDS):
        raise ValueError(f"instruction {text!r} is not of the form 'go to the <colour> <object>'")
    check_goal(words[3], words[4])
    return words[3], words[4]
