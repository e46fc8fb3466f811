"""Sim datasets as training examples, and the task vocabulary the family's tokenizer is built from."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from spec_edge_cloud.control.actions import ACTION_WORDS
from spec_edge_cloud.modeling.vlm_training import Example
from spec_edge_cloud.sim.dataset import EXAMPLES_FILE
from spec_edge_cloud.sim.vocab import INSTRUCTION_WORDS, OBSERVATION_WORDS


def task_words() -> list[str]:
    """Every word an instruction or an answer can contain, in a fixed order (token ids follow it)."""
    return list(dict.fromkeys(INSTRUCTION_WORDS + OBSERVATION_WORDS + ACTION_WORDS))


def read_dataset(directory: str | Path) -> tuple[list[Example], list[dict]]:
    """Examples of a `sim dataset` directory, and their JSON records (episode, seed, ...)."""
    directory = Path(directory)
    path = directory / EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make it with `spec-edge-cloud sim dataset --out {directory}`")
    examples, records = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            image = np.asarray(Image.open(directory / row["image"]).convert("RGB"))
            examples.append(Example(image, row["instruction"], row["answer"]))
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path}:{n}: bad example ({exc})") from None
        records.append(row)
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples, records
