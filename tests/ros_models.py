"""A real, tiny VLM pair for the ROS tests, trained in seconds to answer one fixed plan.

The nodes need models that say something the command node can act on; random weights say random
words (all rejected), and the shipped models answer from what they see, which a test cannot pin
down. So: a 2-layer Qwen2-VL target with the task vocabulary, trained on a few random images to
answer ANSWER whatever it sees, and a draft made from it plus noise, so that the draft is sometimes
wrong (rounds with rejections, early verdicts that get rolled back). Not a test itself.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from spec_edge_cloud.control.actions import ACTION_WORDS
from spec_edge_cloud.modeling.bundle import ModelBundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.tiny import image_processor, tiny_qwen2vl
from spec_edge_cloud.modeling.tokenizer import build_word_tokenizer
from spec_edge_cloud.sim.vocab import INSTRUCTION_WORDS, OBSERVATION_WORDS

ANSWER = "red ball ahead . turn left 10 . walk 0.5 . stop ."
INSTRUCTION = "go to the red ball"


def _images(rng: np.random.Generator, n: int = 8) -> list[np.ndarray]:
    """Noise, and smooth scenes (a floor, a wall, a coloured blob) like the simulator's frames."""
    out = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(n // 2)]
    for _ in range(n - len(out)):
        img = np.empty((112, 112, 3), dtype=np.uint8)
        horizon = int(rng.integers(30, 80))
        img[:horizon], img[horizon:] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        y, x, r = *rng.integers(10, 100, 2), int(rng.integers(5, 30))
        img[max(0, y - r):y + r, max(0, x - r):x + r] = rng.integers(0, 256, 3)
        out.append(img)
    return out


def _train(bundle: ModelBundle, steps: int, seed: int, text: str) -> None:
    tok, model = bundle.tokenizer, bundle.model
    answer = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rng = np.random.default_rng(seed)
    batches = []
    for image in _images(rng):
        prompt = bundle.encode(INSTRUCTION, image)
        ids = torch.tensor([prompt.input_ids + answer])
        labels = ids.clone()
        labels[0, : len(prompt.input_ids)] = -100
        batches.append((ids, labels, prompt.vision))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only fight over the two cores
    model.train()
    for step in range(steps):
        ids, labels, vision = batches[step % len(batches)]
        out = model(input_ids=ids, labels=labels, mm_token_type_ids=(ids == bundle.image_token_id).int(), **vision)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    torch.set_num_threads(threads)


def make_pair(directory: Path, steps: int = 120, draft_noise: float = 0.15, seed: int = 0,
              answer: str = ANSWER) -> tuple[Path, Path]:
    """Save (target_dir, draft_dir) under `directory`: a pair that answers `answer`."""
    words = list(dict.fromkeys(OBSERVATION_WORDS + INSTRUCTION_WORDS + ACTION_WORDS))
    tok = build_word_tokenizer(words)
    torch.manual_seed(seed)
    target = ModelBundle(tiny_qwen2vl(tok, layers=2, hidden=64, seed=seed, logit_scale=1.0), tok, image_processor(112))
    _train(target, steps, seed, answer)
    draft_model = copy.deepcopy(target.model)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in draft_model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * draft_noise * p.std().clamp(min=1e-3))
    draft = ModelBundle(draft_model, tok, image_processor(112))
    target_dir, draft_dir = directory / "target", directory / "draft"
    target.save(target_dir)
    draft.save(draft_dir)
    heads = ExitHeads([1], 64, rank=16, trained=True)
    with torch.no_grad():
        for p in heads.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5, generator=g)
    heads.save(target_dir, note="random weights: wrong early verdicts on purpose (tests)")
    return target_dir, draft_dir
