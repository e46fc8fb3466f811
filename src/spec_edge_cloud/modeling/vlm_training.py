"""Teach a VLM to answer: language-model loss on the answer tokens, optionally distilled from a teacher.

The target learns the expert's answers by teacher forcing (cross-entropy on the answer tokens only:
the image and the instruction are given, never predicted). The draft learns the same answers and,
above all, the target's distribution over them (KL to the target's logits, precomputed once): a
draft that mimics the target, mistakes included, is what makes speculative drafts accepted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .bundle import ModelBundle


@dataclass(frozen=True)
class Example:
    """One training example: an RGB image, the instruction and the answer the model should give."""

    image: np.ndarray
    instruction: str
    answer: str


@dataclass
class Batch:
    inputs: dict                 # model kwargs: input_ids, attention_mask, pixel_values, image_grid_thw, ...
    mask: torch.Tensor           # [B, T-1] True where position t predicts an answer token
    targets: torch.Tensor        # [P] the answer tokens, in row-major order of `mask`

    def to(self, device: torch.device) -> "Batch":
        return Batch({k: v.to(device) for k, v in self.inputs.items()}, self.mask.to(device), self.targets.to(device))


class EncodedExamples:
    """Examples tokenised once with a bundle's tokenizer and image processor (shared by the family)."""

    def __init__(self, bundle: ModelBundle, examples: list[Example]):
        if not examples:
            raise ValueError("no examples to encode")
        if not bundle.is_vlm:
            raise ValueError(f"{bundle.path}: a VLM (model + image processor) is needed")
        self.pad_id = bundle.tokenizer.pad_token_id or 0
        self.image_token_id = bundle.image_token_id
        self.sequences: list[list[int]] = []
        self.prompt_lens: list[int] = []
        self.pixels: list[torch.Tensor] = []
        self.grids: list[torch.Tensor] = []
        eos = bundle.tokenizer.eos_token_id
        for ex in examples:
            prompt = bundle.encode(ex.instruction, ex.image)
            answer = answer_ids(bundle, ex.answer)
            self.sequences.append(prompt.input_ids + answer + [eos])
            self.prompt_lens.append(len(prompt.input_ids))
            # kept on the host (batches go to the model's device): float16 halves the memory, exact enough
            self.pixels.append(prompt.vision["pixel_values"].to("cpu", torch.float16))
            self.grids.append(prompt.vision["image_grid_thw"].cpu())
            bundle.check_length(len(self.sequences[-1]))

    def __len__(self) -> int:
        return len(self.sequences)

    def answer_lengths(self) -> list[int]:
        """Predicted positions per example: the answer tokens and the EOS."""
        return [len(s) - n for s, n in zip(self.sequences, self.prompt_lens)]

    def batch(self, indices: list[int]) -> Batch:
        seqs = [self.sequences[i] for i in indices]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
        for row, i in enumerate(indices):
            s = self.sequences[i]
            ids[row, : len(s)] = torch.tensor(s)
            attention[row, : len(s)] = 1
            mask[row, self.prompt_lens[i] - 1: len(s) - 1] = True
        inputs = dict(input_ids=ids, attention_mask=attention,
                      pixel_values=torch.cat([self.pixels[i].float() for i in indices]),  # (autocast: no float16 cat)
                      image_grid_thw=torch.cat([self.grids[i] for i in indices]),
                      mm_token_type_ids=(ids == self.image_token_id).int())
        return Batch(inputs, mask, ids[:, 1:][mask])


def answer_ids(bundle: ModelBundle, answer: str) -> list[int]:
    """Token ids of an answer; every word must be in the vocabulary (no silent <unk>)."""
    ids = bundle.tokenizer(answer, add_special_tokens=False)["input_ids"]
    unk = bundle.tokenizer.unk_token_id
    if not ids:
        raise ValueError("empty answer")
    if unk is not None and unk in ids:
        unknown = [w for w, i in zip(answer.split(), ids) if i == unk]
        raise ValueError(f"answer {answer!r} has words outside the vocabulary: {unknown}")
    return list(ids)


def answer_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """[P, V] logits at the positions that predict answer tokens."""
    logits = model(**batch.inputs).logits
    return logits[:, :-1][batch.mask].float()


@torch.no_grad()
def teacher_logits(bundle: ModelBundle, data: EncodedExamples, batch_size: int = 64) -> list[torch.Tensor]:
    """The teacher's logits at every example's answer positions (one [n_i, V] tensor per example)."""
    bundle.model.eval()
    out: list[torch.Tensor] = []
    lengths = data.answer_lengths()
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        rows = answer_logits(bundle.model, data.batch(idx).to(bundle.device))
        out += list(torch.split(rows, [lengths[i] for i in idx]))
    return [t.to("cpu", torch.float16) for t in out]


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float = 2e-3
    batch: int = 32
    seed: int = 0
    warmup: float = 0.05          # fraction of steps with a linear warm-up
    weight_decay: float = 0.01
    kd_weight: float = 0.0        # 0: plain LM loss; else loss = (1-w) CE + w T^2 KL(teacher || model)
    temperature: float = 1.0
    log_every: int = 100


def train(bundle: ModelBundle, data: EncodedExamples, config: TrainConfig,
          teacher: list[torch.Tensor] | None = None, log: Callable[[str], None] = print) -> dict:
    """AdamW with warm-up and cosine decay; batches drawn epoch by epoch from a seeded permutation."""
    if config.kd_weight and teacher is None:
        raise ValueError("kd_weight > 0 needs teacher logits")
    if teacher is not None and len(teacher) != len(data):
        raise ValueError(f"{len(teacher)} teacher rows for {len(data)} examples")
    model = bundle.model
    model.train()
    g = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    warm = max(1, int(config.steps * config.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.1 + 0.45 * (
        1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, config.steps - warm))))))
    order: list[int] = []
    start, running = time.perf_counter(), []
    for step in range(1, config.steps + 1):
        if len(order) < config.batch:
            order += torch.randperm(len(data), generator=g).tolist()
        idx, order = order[: config.batch], order[config.batch:]
        batch = data.batch(idx).to(bundle.device)
        logits = answer_logits(model, batch)
        loss = F.cross_entropy(logits, batch.targets)
        if config.kd_weight:
            t = config.temperature
            soft = F.softmax(torch.cat([teacher[i].float() for i in idx]).to(logits.device) / t, -1)
            kd = F.kl_div(F.log_softmax(logits / t, -1), soft, reduction="batchmean") * t * t
            loss = (1 - config.kd_weight) * loss + config.kd_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            log(f"step {step}/{config.steps} loss {sum(running) / len(running):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
            running = []
    model.eval()
    return {"steps": config.steps, "batch": config.batch, "lr": config.lr, "kd_weight": config.kd_weight,
            "seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def greedy_answers(bundle: ModelBundle, data: EncodedExamples, max_new_tokens: int = 40,
                   batch_size: int = 64) -> list[str]:
    """Each example's greedy answer (Hugging Face generate, prompts batched by length)."""
    bundle.model.eval()
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(data.prompt_lens):
        by_len.setdefault(n, []).append(i)
    texts: dict[int, str] = {}
    eos = sorted(bundle.eos_ids)
    for n, members in by_len.items():
        for start in range(0, len(members), batch_size):
            idx = members[start: start + batch_size]
            ids = torch.tensor([data.sequences[i][:n] for i in idx], device=bundle.device)
            out = bundle.model.generate(ids, pixel_values=torch.cat([data.pixels[i].float() for i in idx]).to(
                                            bundle.device, bundle.dtype),
                                        image_grid_thw=torch.cat([data.grids[i] for i in idx]).to(bundle.device),
                                        mm_token_type_ids=(ids == data.image_token_id).int(),
                                        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                        pad_token_id=data.pad_id)
            for row, i in enumerate(idx):
                texts[i] = bundle.decode(out[row, n:].tolist())
    return [texts[i] for i in range(len(data))]
