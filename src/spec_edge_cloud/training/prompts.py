"""The project's own instruction prompts for the text (LLM) regime: exit and draft training, and reports.

Written here, not downloaded: request styles crossed with subjects. The held-out set uses subjects
that no training prompt mentions, so reported agreement and acceptance are measured on text the
heads and the draft never saw.
"""
from __future__ import annotations

import random
import re

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


# More ways to ask, for the broad prompts only: the held-out prompts use STYLES, so these add variety
# without making the held-out set look any more like training text.
BROAD_STYLES: tuple[str, ...] = (
    "Tell me a short story about {}.",
    "Why do people care about {}?",
    "Write a short dialogue between two friends about {}.",
    "What is the difference between {} and something similar?",
    "Give me a simple step-by-step guide related to {}.",
    "What would happen if {} did not exist?",
    "Write a product description that mentions {}.",
    "Summarise what an encyclopedia might say about {}.",
    "Ask three interesting questions about {} and answer them.",
    "Write a short news report involving {}.",
    "Compare {} with {}.",
    "Write a short story that involves {} and {}.",
)


def heldout_stems() -> tuple[str, ...]:
    """Lower-case word stems of the held-out subjects ('dinosaurs' -> 'dinosaur'): no broad prompt may use them."""
    words = {w for subject in HELDOUT_SUBJECTS for w in subject.lower().split() if w not in ("the", "a", "an")}
    return tuple(sorted(re.sub(r"(ies|s)$", "", w) for w in words))


def broad_prompts(words: list[str], n: int, seed: int, styles: tuple[str, ...] = STYLES + BROAD_STYLES) -> list[str]:
    """`n` prompts about random words (e.g. a tokenizer's whole-word tokens), each in a random style.

    Why: exits trained on the answers to a few templated subjects fit those subjects and do not
    generalise (docs/models.md); thousands of subjects make the answers they learn from as varied as
    the model's own text. Words starting with a held-out subject's stem are left out, so the held-out
    prompts stay about subjects no training prompt mentions.
    """
    stems = heldout_stems()
    pool = sorted({w.lower() for w in words if w.isalpha() and not w.lower().startswith(stems)})
    if len(pool) < 2:
        raise ValueError("broad_prompts needs at least two usable words")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        style = rng.choice(styles)
        out.append(style.format(*rng.sample(pool, style.count("{}"))))
    return out
