"""Teacher data from a causal LM's own greedy answers: what its exits and its draft must learn.

The model answers a set of prompts (batched, left-padded generation: only the answers' tokens
matter here, not their exact numerics), then each prompt + answer is run once, unpadded, to read
the hidden states at the exit layers and the final logits at every answer position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .bundle import ModelBundle, Prompt
from .exit_training import TeacherBatch


@dataclass
class AnswerSet:
    sequences: list[list[int]]   # prompt + the model's own answer
    prompt_lens: list[int]

    def answer_lengths(self) -> list[int]:
        return [len(s) - n for s, n in zip(self.sequences, self.prompt_lens)]


@torch.no_grad()
def own_answers(bundle: ModelBundle, prompts: list[Prompt], max_new_tokens: int, batch_size: int = 8) -> AnswerSet:
    """The model's greedy answers to text prompts, generated `batch_size` at a time."""
    if any(p.vision for p in prompts):
        raise ValueError("own_answers takes text prompts only")
    pad = bundle.tokenizer.pad_token_id
    pad = pad if pad is not None else sorted(bundle.eos_ids)[0]
    sequences, lens = [], []
    for start in range(0, len(prompts), batch_size):
        group = [p.input_ids for p in prompts[start: start + batch_size]]
        width = max(len(g) for g in group)
        ids = torch.tensor([[pad] * (width - len(g)) + g for g in group], device=bundle.device)
        mask = torch.tensor([[0] * (width - len(g)) + [1] * len(g) for g in group], device=bundle.device)
        out = bundle.model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=sorted(bundle.eos_ids), pad_token_id=pad)
        for g, row in zip(group, out[:, width:].tolist()):
            answer = []
            for t in row:
                answer.append(t)
                if t in bundle.eos_ids:
                    break
            sequences.append(g + answer)
            lens.append(len(g))
    return AnswerSet(sequences, lens)


@torch.no_grad()
def teacher_batch(bundle: ModelBundle, answers: AnswerSet, layers: list[int]) -> TeacherBatch:
    """Raw outputs of `layers` and final logits at every answer position (one unpadded pass per answer)."""
    num_layers = bundle.model.config.get_text_config().num_hidden_layers
    if any(not 1 <= k < num_layers for k in layers):
        raise ValueError(f"exit layers must lie in 1..{num_layers - 1}, got {layers}")
    hidden: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    targets = []
    for seq, n in zip(answers.sequences, answers.prompt_lens):
        if len(seq) == n:
            continue
        out = bundle.model(input_ids=torch.tensor([seq], device=bundle.device), output_hidden_states=True)
        rows = slice(n - 1, len(seq) - 1)          # positions that predict the answer tokens
        targets.append(out.logits[0, rows].float())
        for k in layers:
            hidden[k].append(out.hidden_states[k][0, rows].float())  # [0] is the embeddings
    if not targets:
        raise ValueError("the model produced no answer tokens for any prompt: nothing to distil")
    return TeacherBatch({k: torch.cat(v) for k, v in hidden.items()}, torch.cat(targets))
