"""Teacher data from a causal LM's own greedy answers: what its exits and its draft must learn.

The model answers a set of prompts (batched, left-padded generation: only the answers' tokens
matter here, not their exact numerics), then each prompt + answer is run once, unpadded, to read
the hidden states at the exit layers and the final logits at every answer position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    sequences, lens = [], []
    for start in range(0, len(prompts), batch_size):
        group = [p.input_ids for p in prompts[start: start + batch_size]]
        ids, kw = _left_padded(bundle, group)
        out = bundle.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, **kw)
        for g, row in zip(group, out[:, ids.shape[1]:].tolist()):
            sequences.append(g + _until_eos(row, bundle.eos_ids))
            lens.append(len(g))
    return AnswerSet(sequences, lens)


def _left_padded(bundle: ModelBundle, group: list[list[int]]) -> tuple[torch.Tensor, dict]:
    """Prompts left-padded into one batch, and generate()'s mask, pad and EOS arguments."""
    pad = bundle.tokenizer.pad_token_id
    pad = pad if pad is not None else sorted(bundle.eos_ids)[0]
    width = max(len(g) for g in group)
    ids = torch.tensor([[pad] * (width - len(g)) + g for g in group], device=bundle.device)
    mask = torch.tensor([[0] * (width - len(g)) + [1] * len(g) for g in group], device=bundle.device)
    return ids, {"attention_mask": mask, "eos_token_id": sorted(bundle.eos_ids), "pad_token_id": pad}


def _until_eos(row: list[int], eos_ids: set[int]) -> list[int]:
    """A generated row up to and including its first EOS (the batch pads finished rows after it)."""
    answer = []
    for t in row:
        answer.append(t)
        if t in eos_ids:
            break
    return answer


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


@torch.no_grad()
def sampled_answers(bundle: ModelBundle, prompts: list[Prompt], max_new_tokens: int, layers: list[int],
                    temperature: float = 0.8, batch_size: int = 32, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> tuple[AnswerSet, TeacherBatch]:
    """The model's sampled answers to text prompts (greedy at temperature 0), with their teacher data
    read during generation.

    Why: an exit or a draft needs the final layer's distribution at every position of MANY varied
    answers, and teacher forcing labels any text. Sampling (not greedy) varies the answers; the
    hidden states that generation computes anyway are kept, so no second pass is needed. The final
    layer is kept as the final norm's output (`TeacherBatch.normed`): full logits of tens of
    thousands of positions would not fit in memory. States are stored in float16.
    """
    if any(p.vision for p in prompts):
        raise ValueError("sampled_answers takes text prompts only")
    num_layers = bundle.model.config.get_text_config().num_hidden_layers
    if any(not 1 <= k < num_layers for k in layers):
        raise ValueError(f"exit layers must lie in 1..{num_layers - 1}, got {layers}")
    torch.manual_seed(seed)
    sampling = (dict(do_sample=True, temperature=temperature, top_k=None, top_p=None) if temperature > 0
                else dict(do_sample=False))
    sequences, lens = [], []
    hidden: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    finals = []
    for start in range(0, len(prompts), batch_size):
        group = [p.input_ids for p in prompts[start: start + batch_size]]
        ids, kw = _left_padded(bundle, group)
        out = bundle.model.generate(ids, max_new_tokens=max_new_tokens, return_dict_in_generate=True,
                                    output_hidden_states=True, **sampling, **kw)
        # step 0 is the prompt's pass (its last position predicts the first answer token); step i>0
        # the pass over answer token i, which predicts token i+1
        steps = [tuple(h[:, -1] for h in step) for step in out.hidden_states]
        for row, g in enumerate(group):
            answer = _until_eos(out.sequences[row, ids.shape[1]:].tolist(), bundle.eos_ids)
            sequences.append(g + answer)
            lens.append(len(g))
            for k in layers:
                hidden[k].append(torch.stack([steps[i][k][row] for i in range(len(answer))]).half())
            finals.append(torch.stack([steps[i][-1][row] for i in range(len(answer))]).half())
        if log:
            log(f"sampled answers to {len(sequences)}/{len(prompts)} prompts")
    return AnswerSet(sequences, lens), TeacherBatch({k: torch.cat(v) for k, v in hidden.items()}, torch.cat(finals),
                                                    normed=True)
