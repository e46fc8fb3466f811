"""Self-distillation of exit heads: teach each exit the final layer's distribution on the model's own text.

Data: the model's greedy answers to a set of prompts (its own generations, so the exits learn what
the final layer actually says at decoding time), teacher-forced in one pass per answer. Each exit
adapter is trained with KL(final || exit) on the answer positions; the backbone stays frozen.
Agreement (exit argmax == final argmax) on held-out prompts is the figure that matters for early
verdicts.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .bundle import ModelBundle, Prompt
from .exit_heads import ExitHeads
from .layers import decoder_parts

log = logging.getLogger(__name__)


@dataclass
class TeacherBatch:
    hidden: dict[int, torch.Tensor]   # exit layer -> [positions, hidden] raw layer outputs
    target: torch.Tensor              # [positions, vocab] final-layer logits


@torch.no_grad()
def _generate(bundle: ModelBundle, prompt: Prompt, max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt.input_ids], device=bundle.device)
    kw = {}
    if prompt.vision:
        kw = dict(prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int())
    out = bundle.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=sorted(bundle.eos_ids) or None,
                                pad_token_id=bundle.tokenizer.pad_token_id or 0, **kw)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def teacher_data(bundle: ModelBundle, prompts: list[Prompt], layers: list[int],
                 max_new_tokens: int = 32) -> TeacherBatch:
    """Hidden states at the exit layers and final logits over the model's own answers."""
    parts = decoder_parts(bundle.model)
    hidden: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    targets = []
    for prompt in prompts:
        answer = _generate(bundle, prompt, max_new_tokens)
        full = prompt.input_ids + answer
        ids = torch.tensor([full], device=bundle.device)
        n = len(answer)  # positions len(prompt)-1 .. end-2 predict the answer tokens
        if n == 0:
            continue
        captured: dict[int, torch.Tensor] = {}
        hooks = [parts.layers[k - 1].register_forward_hook(
            lambda _m, _i, out, k=k: captured.__setitem__(k, out[0] if isinstance(out, tuple) else out))
            for k in layers]
        kw = {}
        if prompt.vision:
            kw = dict(prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int())
        try:
            logits = bundle.model(input_ids=ids, **kw).logits[0]
        finally:
            for h in hooks:
                h.remove()
        sl = slice(len(prompt.input_ids) - 1, len(full) - 1)
        targets.append(logits[sl].float())
        for k in layers:
            hidden[k].append(captured[k][0, sl].float())
    if not targets:
        raise ValueError("the model produced no answer tokens for any prompt: nothing to distil")
    return TeacherBatch({k: torch.cat(v) for k, v in hidden.items()}, torch.cat(targets))


def agreement(heads: ExitHeads, bundle: ModelBundle, data: TeacherBatch) -> dict[int, float]:
    parts = decoder_parts(bundle.model)
    final = data.target.argmax(-1)
    with torch.no_grad():
        return {k: float((heads.logits(k, data.hidden[k], parts).argmax(-1) == final).float().mean())
                for k in heads.layers}


def train_exit_heads(heads: ExitHeads, bundle: ModelBundle, data: TeacherBatch, steps: int = 300,
                     lr: float = 3e-3, batch: int = 256, seed: int = 0, temperature: float = 1.0) -> dict:
    """Train every adapter by KL to the final layer; lm_head and norm stay frozen."""
    parts = decoder_parts(bundle.model)
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    heads.to(bundle.device).train()  # float32 adapters (mixed precision on a bfloat16 model)
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)  # indices drawn on the host, as on any device
    teacher = F.softmax(data.target / temperature, -1)
    n = teacher.shape[0]
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=g).to(teacher.device)
        loss = sum(F.kl_div(F.log_softmax(heads.logits(k, data.hidden[k][idx], parts) / temperature, -1),
                            teacher[idx], reduction="batchmean") for k in heads.layers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.info("exit distillation step %d loss %.4f", step, loss.item())
    heads.eval()
    heads.trained = True
    return {"steps": steps, "seconds": time.perf_counter() - start, "positions": n}
