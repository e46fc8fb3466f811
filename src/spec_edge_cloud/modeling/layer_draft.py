"""A draft cut from the target itself: its first `keep` layers plus one trained layer, same head.

Why: a real-weights target with no small sibling on disk still needs a draft that shares its
tokenizer. The target's own lower layers already carry most of what its answer will be (that is
why early exits work); one extra decoder layer, started as a copy of the target's last layer and
trained by KL to the target's final distribution, turns them into a plain Hugging Face causal LM
of keep+1 layers that the draft engine runs like any other.

Only the trained layer is stored (`draft_layer.safetensors` + `draft.json`, a few MB); the full draft
directory is rebuilt from the target's weights wherever the target is (`build_draft_dir`). The
embedded VLM family cuts its draft the same way (training/vlm_family.py) and then trains every
weight of it, vision tower included; that draft is small and stored whole.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .bundle import ModelBundle, ModelDirError, load_bundle, model_file_errors
from .exit_training import TeacherBatch
from .layers import decoder_parts
from .text_teacher import AnswerSet

WEIGHTS, META = "draft_layer.safetensors", "draft.json"


def cut_draft(target: torch.nn.Module, keep: int) -> torch.nn.Module:
    """A new model of the target's class: layers 1..keep copied, then a copy of the last layer."""
    layers = decoder_parts(target).layers
    if not 1 <= keep < len(layers):
        raise ValueError(f"keep must be in 1..{len(layers) - 1}, got {keep}")
    config = copy.deepcopy(target.config)
    text = config.get_text_config()   # the config itself for an LM, its decoder's for a VLM
    text.num_hidden_layers = keep + 1
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = text.layer_types[:keep] + text.layer_types[-1:]
    draft = type(target)(config)
    state = {k: v for k, v in target.state_dict().items() if ".layers." not in k}
    state.update(_layer_state(target, range(keep), 0))
    state.update(_layer_state(target, [len(layers) - 1], keep))
    draft.load_state_dict(state)
    return draft.to(next(target.parameters()).device).eval()


def _layer_state(model: torch.nn.Module, indices, first: int) -> dict:
    out = {}
    for new, old in enumerate(indices, start=first):
        for k, v in model.state_dict().items():
            if f".layers.{old}." in k:
                out[k.replace(f".layers.{old}.", f".layers.{new}.")] = v.clone()
    return out


def train_layer_draft(draft: ModelBundle, answers: AnswerSet, teacher: TeacherBatch, steps: int,
                      lr: float = 3e-4, batch: int = 8, seed: int = 0,
                      log: Callable[[str], None] = print) -> dict:
    """Train the draft's last layer by KL(target || draft) on the target's own answers.

    `teacher` holds the target's final layer at every answer position, in the order of `answers`
    (text_teacher.teacher_batch or sampled_answers); the draft shares the target's lm_head.
    """
    model, parts = draft.model, decoder_parts(draft.model)
    lengths = answers.answer_lengths()
    if sum(lengths) != teacher.positions:
        raise ValueError(f"{teacher.positions} teacher rows for {sum(lengths)} answer positions")
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    for p in model.parameters():
        p.requires_grad_(False)
    trained = parts.layers[-1]
    for p in trained.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    pad = draft.tokenizer.pad_token_id or 0
    usable = [i for i, n in enumerate(lengths) if n > 0]
    start, running = time.perf_counter(), []
    model.train()
    for step in range(1, steps + 1):
        idx = [usable[j] for j in torch.randint(0, len(usable), (min(batch, len(usable)),), generator=g)]
        seqs = [answers.sequences[i] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=draft.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=draft.device)
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = torch.cat([hidden[r, answers.prompt_lens[i] - 1: len(answers.sequences[i]) - 1]
                          for r, i in enumerate(idx)])
        logits = parts.lm_head(rows).float()
        with torch.no_grad():
            positions = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in idx])
            soft = F.softmax(teacher.logits(parts, positions).to(logits.device), -1)
        loss = F.kl_div(F.log_softmax(logits, -1), soft, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if step % 50 == 0 or step == steps:
            log(f"draft layer step {step}/{steps} KL {sum(running) / len(running):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
            running = []
    model.eval()
    for p in trained.parameters():
        p.requires_grad_(False)
    return {"steps": steps, "lr": lr, "batch": batch, "seconds": round(time.perf_counter() - start, 1)}


def save_trained_layer(draft: torch.nn.Module, directory: str | Path, **meta) -> None:
    """Store only the trained last layer (float16) and how to rebuild the draft around it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keep = draft.config.num_hidden_layers - 1
    state = {k.split(f".layers.{keep}.", 1)[1]: v.to(torch.float16).contiguous()
             for k, v in draft.state_dict().items() if f".layers.{keep}." in k}
    save_file(state, str(directory / WEIGHTS))
    (directory / META).write_text(json.dumps({"keep": keep, **meta}, indent=1))


def build_draft(target: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    """The draft described by a trained-layer directory, cut from a loaded target."""
    directory = Path(directory)
    if not (directory / META).is_file() or not (directory / WEIGHTS).is_file():
        raise ModelDirError(f"{directory}: no trained draft layer ({META} + {WEIGHTS})")
    meta = json.loads((directory / META).read_text())
    draft = cut_draft(target, int(meta["keep"]))
    layer = decoder_parts(draft).layers[-1]
    with model_file_errors(directory):
        state = load_file(str(directory / WEIGHTS))
    layer.load_state_dict({k: v.to(next(layer.parameters()).dtype) for k, v in state.items()})
    return draft


def build_draft_dir(target_dir: str | Path, layer_dir: str | Path, out_dir: str | Path) -> Path:
    """A full Hugging Face draft directory (weights + the target's tokenizer), rebuilt if missing or stale."""
    out_dir, layer_dir = Path(out_dir), Path(layer_dir)
    stamp = (layer_dir / WEIGHTS).read_bytes() if (layer_dir / WEIGHTS).is_file() else b""
    marker = out_dir / "draft_layer.source"
    if marker.is_file() and marker.read_bytes() == _digest(stamp):
        return out_dir
    target = load_bundle(target_dir)
    draft = build_draft(target.model, layer_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    draft.save_pretrained(tmp)
    target.tokenizer.save_pretrained(tmp)
    (tmp / marker.name).write_bytes(_digest(stamp))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def _digest(data: bytes) -> bytes:
    import hashlib
    return hashlib.sha256(data).hexdigest().encode()
