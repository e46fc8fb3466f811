"""Self-distillation of exit heads: teach each exit the final layer's distribution on the model's own text.

Data: the model's greedy answers to a set of prompts (its own generations, so the exits learn what
the final layer actually says at decoding time), teacher-forced in one pass per answer. Each exit
adapter is trained with KL(final || exit) on the answer positions; the backbone stays frozen.
Agreement (exit argmax == final argmax) on held-out prompts is the per-token figure.

What pre-drafting needs is more: the exit's whole round verdict (accepted count and next token)
equal to the final one. Given a draft model, `teacher_data` also cuts each answer into the rounds a
greedy draft of length γ makes of it (the draft proposes its argmax after each prefix of the
target's answer; a round ends at its first rejected token, or after γ accepted and the bonus).
Every position of a round is one the final layer rules on with the target's own tokens before it,
so an exit's round verdict equals the final one exactly when its argmax agrees at every position
of the round (`round_agreement`, the figure of the model cards' "round verdicts"). The objective
that trains for it (`ce_weight` > 0) adds the log-likelihood of the final's tokens to the KL: over
a round's positions it is the log-probability the exit gives the final's whole verdict; the KL
keeps the exit's confidences those of the final layer, which is what calibrated thresholds read.

An attending exit (exit_heads.py) reads whole sequences: for its layer the data keep every prompt's
states from position 0 (`sequences`), and it trains on batches of whole prompts, teacher-forced, as
its cache holds them at decoding time (the target's own tokens before each verified position).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .bundle import ModelBundle, Prompt
from .exit_heads import ExitHeads
from .layers import DecoderParts, decoder_parts

log = logging.getLogger(__name__)


@dataclass
class TeacherBatch:
    hidden: dict[int, torch.Tensor]   # exit layer -> [positions, hidden] raw layer outputs
    target: torch.Tensor              # [positions, vocab] final-layer logits, or [positions, hidden] if `normed`
    rounds: list[tuple[int, int]] = field(default_factory=list)  # [start, end) positions of each drafted round
    normed: bool = False              # target holds the final norm's output: logits = lm_head(target)
    sequences: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # attending layer -> [len, hidden] each
    # per prompt: (its first answer position in its sequence, its first row in `target`, answer length)
    spans: list[tuple[int, int, int]] = field(default_factory=list)

    def rows_of(self, prompt: int) -> slice:
        """Prompt `prompt`'s answer positions among `target`'s rows."""
        _, row, n = self.spans[prompt]
        return slice(row, row + n)

    @property
    def positions(self) -> int:
        return int(self.target.shape[0])

    def first(self, n: int) -> "TeacherBatch":
        """The first `n` positions (and the rounds that lie within them), stored as these are."""
        kept = [s for s in self.spans if s[1] + s[2] <= n]
        return TeacherBatch({k: v[:n] for k, v in self.hidden.items()}, self.target[:n],
                            [r for r in self.rounds if r[1] <= n], self.normed,
                            {k: v[:len(kept)] for k, v in self.sequences.items()}, kept)

    def logits(self, parts: DecoderParts, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """The final layer's logits (float32) at `rows`."""
        target = self.target[rows]
        if self.normed:
            target = parts.lm_head(target.to(parts.lm_head.weight.device, parts.lm_head.weight.dtype))
        return target.float()


def draft_rounds(answer: list[int], proposed: list[int], gamma: int) -> list[tuple[int, int]]:
    """The rounds greedy speculation makes of `answer` (the target's tokens) when the draft proposes
    `proposed[i]` after the answer's first i tokens: each round's [start, end) positions, ending at
    its first rejected token (the correction) or, with γ accepted, at the bonus token."""
    out, start, n = [], 0, len(answer)
    while start < n:
        k = 0
        while k < gamma and start + k < n and proposed[start + k] == answer[start + k]:
            k += 1
        end = min(start + k + 1, n)
        out.append((start, end))
        start = end
    return out


def _vision_kw(bundle: ModelBundle, prompt: Prompt, ids: torch.Tensor) -> dict:
    return dict(prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int()) if prompt.vision else {}


@torch.no_grad()
def _generate(bundle: ModelBundle, prompt: Prompt, max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt.input_ids], device=bundle.device)
    out = bundle.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=sorted(bundle.eos_ids) or None,
                                pad_token_id=bundle.tokenizer.pad_token_id or 0, **_vision_kw(bundle, prompt, ids))
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def teacher_data(bundle: ModelBundle, prompts: list[Prompt], layers: list[int], max_new_tokens: int = 32,
                 draft: ModelBundle | None = None, gamma: int = 4, attend: list[int] = ()) -> TeacherBatch:
    """Hidden states at the exit layers and final logits over the model's own answers; with a
    `draft` (same tokenizer), the rounds its greedy drafts of length `gamma` cut them into; for the
    `attend` layers, every prompt's whole sequence of states too."""
    parts = decoder_parts(bundle.model)
    hidden: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    sequences: dict[int, list[torch.Tensor]] = {k: [] for k in attend}
    targets, rounds, offset, spans = [], [], 0, []
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
        try:
            logits = bundle.model(input_ids=ids, **_vision_kw(bundle, prompt, ids)).logits[0]
        finally:
            for h in hooks:
                h.remove()
        sl = slice(len(prompt.input_ids) - 1, len(full) - 1)
        targets.append(logits[sl].float())
        for k in layers:
            hidden[k].append(captured[k][0, sl].float())
        for k in attend:
            sequences[k].append(captured[k][0, :sl.stop].float())
        spans.append((sl.start, offset, n))
        if draft is not None:   # the draft's proposal after each prefix of the target's answer
            proposed = draft.model(input_ids=ids, **_vision_kw(draft, prompt, ids)).logits[0, sl].argmax(-1)
            rounds += [(offset + a, offset + b) for a, b in draft_rounds(answer, proposed.tolist(), gamma)]
        offset += n
    if not targets:
        raise ValueError("the model produced no answer tokens for any prompt: nothing to distil")
    return TeacherBatch({k: torch.cat(v) for k, v in hidden.items()}, torch.cat(targets), rounds,
                        sequences=sequences, spans=spans)


def _sequence_logits(heads: ExitHeads, layer: int, data: TeacherBatch, prompts: list[int],
                     parts: DecoderParts) -> torch.Tensor:
    """An attending exit's logits at the answer positions of `prompts`, in order: their whole
    sequences in one batch, right-padded (padding after a position changes nothing a causal
    attention computes there)."""
    if layer not in data.sequences:
        raise ValueError(f"exit {layer} attends, but these teacher data hold no whole sequences for it "
                         "(teacher_data(..., attend=...))")
    seqs = [data.sequences[layer][i] for i in prompts]
    device = parts.lm_head.weight.device
    batch = torch.zeros(len(seqs), max(len(x) for x in seqs), seqs[0].shape[-1], device=device)
    for j, x in enumerate(seqs):
        batch[j, :len(x)] = x.to(device)
    logits = heads.logits(layer, batch, parts)
    return torch.cat([logits[j, a:a + n] for j, (a, _, n) in enumerate(data.spans[i] for i in prompts)])


def _agrees(heads: ExitHeads, bundle: ModelBundle, data: TeacherBatch, chunk: int = 2048) -> dict[int, torch.Tensor]:
    """Per exit, per position: the exit's argmax equals the final layer's (in chunks: a
    vocabulary-wide row per position)."""
    parts = decoder_parts(bundle.model)
    same: dict[int, list[torch.Tensor]] = {k: [] for k in heads.layers}
    per_position = [k for k in heads.layers if k not in heads.attend]
    with torch.no_grad():
        for start in range(0, data.positions, chunk):
            rows = slice(start, start + chunk)
            final = data.logits(parts, rows).argmax(-1)
            for k in per_position:
                hidden = data.hidden[k][rows].to(bundle.device).float()
                same[k].append(heads.logits(k, hidden, parts).argmax(-1).to(final.device) == final)
        for k in heads.attend:   # whole sequences, a few prompts at a time, in the rows' order
            for first in range(0, len(data.spans), 16):
                prompts = list(range(first, min(first + 16, len(data.spans))))
                rows = slice(data.rows_of(prompts[0]).start, data.rows_of(prompts[-1]).stop)
                final = data.logits(parts, rows).argmax(-1)
                exit_top = _sequence_logits(heads, k, data, prompts, parts).argmax(-1)
                same[k].append(exit_top.to(final.device) == final)
    return {k: torch.cat(v) for k, v in same.items()}


def agreement(heads: ExitHeads, bundle: ModelBundle, data: TeacherBatch) -> dict[int, float]:
    return {k: float(ok.float().mean()) for k, ok in _agrees(heads, bundle, data).items()}


def round_agreement(heads: ExitHeads, bundle: ModelBundle, data: TeacherBatch) -> dict[int, float]:
    """Per exit, the share of drafted rounds whose whole verdict it gets right (every position)."""
    if not data.rounds:
        raise ValueError("these teacher data hold no drafted rounds (teacher_data without a draft)")
    return {k: sum(bool(ok[a:b].all()) for a, b in data.rounds) / len(data.rounds)
            for k, ok in _agrees(heads, bundle, data).items()}


def train_exit_heads(heads: ExitHeads, bundle: ModelBundle, data: TeacherBatch, steps: int = 300,
                     lr: float = 3e-3, batch: int = 256, seed: int = 0, temperature: float = 1.0,
                     ce_weight: float = 0.0, sequence_batch: int = 32) -> dict:
    """Train every adapter by KL to the final layer (+ `ce_weight` x cross-entropy to its tokens, the
    round-verdict objective) on `batch` random positions a step, and every attending exit on
    `sequence_batch` random whole prompts; lm_head and norm stay frozen."""
    parts = decoder_parts(bundle.model)
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    heads.to(bundle.device).train()  # float32 adapters (mixed precision on a bfloat16 model)
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)  # indices drawn on the host, as on any device
    g_seq = torch.Generator().manual_seed(seed + 1)  # its own stream: adapters alone train as they did
    n = data.positions
    per_position = [k for k in heads.layers if k not in heads.attend]

    def distil(loss, logits: torch.Tensor, final: torch.Tensor):
        """`loss` plus the exit's KL to `final` (and its cross-entropy to final's tokens)."""
        teacher, tokens = F.softmax(final / temperature, -1), final.argmax(-1)
        loss = loss + F.kl_div(F.log_softmax(logits / temperature, -1), teacher, reduction="batchmean")
        return loss + ce_weight * F.cross_entropy(logits.float(), tokens) if ce_weight else loss

    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=g).to(data.target.device)
        with torch.no_grad():
            final = data.logits(parts, idx)
        loss = 0.0
        for k in per_position:
            loss = distil(loss, heads.logits(k, data.hidden[k][idx].to(bundle.device).float(), parts), final)
        if heads.attend:
            prompts = torch.randint(0, len(data.spans), (min(sequence_batch, len(data.spans)),), generator=g_seq)
            prompts = prompts.tolist()
            with torch.no_grad():
                seq_final = torch.cat([data.logits(parts, data.rows_of(i)) for i in prompts])
            for k in heads.attend:
                loss = distil(loss, _sequence_logits(heads, k, data, prompts, parts), seq_final.to(bundle.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.info("exit distillation step %d loss %.4f (%.0f s)", step, loss.item(), time.perf_counter() - start)
    heads.eval()
    heads.trained = True
    return {"steps": steps, "seconds": time.perf_counter() - start, "positions": n}
