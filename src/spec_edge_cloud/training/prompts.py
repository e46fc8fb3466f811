"""The project's own instruction prompts for the text (LLM) regime: exit and draft training, and reports.

Written here, not downloaded: request styles crossed with subjects. The held-out set uses subjects
that no training prompt mentions, so reported agreement and acceptance are measured on text the
heads and the draft never saw.
"""
from __future__ import annotations

STYLES: tuple[str, ...] = (
    "Explain what {} is in simple words.",
    "Give three short facts about {}.",
    "Write a four-line poem about {}.",
    "What are the main advantages and disadvantages of {}?",
    "Describe {} to a ten-year-old.",
    "Write a short paragraph about the history of {}.",
    "List a few everyday uses of {}.",
    "How would you explain how {} works to a friend?",
)

TRAIN_SUBJECTS: tuple[str, ...] = (
    "the moon", "photosynthesis", "a bicycle", "the internet", "volcanoes", "honey bees", "rain",
    "the human heart", "electric cars", "chess", "coffee", "the ocean", "gravity", "a compass", "bread",
    "solar panels", "the Roman Empire", "penguins", "earthquakes", "a telescope", "recycling", "the piano",
    "vaccines", "trains", "robots",
)

HELDOUT_SUBJECTS: tuple[str, ...] = (
    "lightning", "dinosaurs", "the alphabet", "rivers", "snow", "batteries", "maps", "tea",
)


def instruction_prompts(split: str) -> list[str]:
    """'train' (200 prompts) or 'heldout' (64), each subject asked in every style."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    subjects = TRAIN_SUBJECTS if split == "train" else HELDOUT_SUBJECTS
    return [style.format(subject) for subject in subjects for style in STYLES]
