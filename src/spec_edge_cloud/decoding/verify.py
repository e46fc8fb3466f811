"""Verification of a draft against target distributions: greedy and speculative sampling.

`verdict(...)` takes the target's logits at the γ+1 positions of one pass (the last committed token
and the γ drafted ones) and returns how many draft tokens are accepted and the token that follows.
The same function serves exit heads (provisional verdicts) and the final layer.

Randomness is a pure function of (seed, absolute position, purpose): an exit head and the final
layer that see the same position draw the same uniforms, so a provisional verdict is a faithful
preview, and a replay with the same seed gives the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Verdict:
    accepted: int       # number of draft tokens accepted (0..γ)
    next_token: int     # the target's token after them (correction or bonus)
    confidence: float   # lowest top-1 probability over the positions that decided the verdict


def _generator(seed: int, position: int, purpose: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + position * 97 + purpose) % (2**63 - 1))
    return g


def uniform(seed: int, position: int, purpose: int) -> float:
    return float(torch.rand((), generator=_generator(seed, position, purpose)))


def sample(probs: torch.Tensor, seed: int, position: int, purpose: int) -> int:
    return int(torch.multinomial(probs, 1, generator=_generator(seed, position, purpose)))


ACCEPT, RESIDUAL, BONUS, DRAFT = 1, 2, 3, 4  # purposes of the random draws


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.float() / temperature, dim=-1)


def truncate(probs: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A distribution cut to its k likeliest tokens and to the fewest of them holding `top_p`, renormalised:
    (ids [k] as floats, exact below 2^24, so both leave the device in one copy; probabilities [k],
    likeliest first; tokens past the top-p cut keep probability 0).

    Why a draft may do this: speculative sampling is exact for any draft distribution q, so drafting
    from the truncated q keeps the output the target's; only acceptance changes (the mass q moves onto
    likely tokens), and the uplink carries k numbers instead of the vocabulary's."""
    k = min(top_k or probs.shape[-1], probs.shape[-1])
    q, ids = torch.topk(probs, k)
    if top_p < 1.0:
        before = torch.cumsum(q, -1) - q  # mass of the likelier tokens: keep a token while that is below top_p
        q = torch.where(before < top_p, q, torch.zeros_like(q))
    return ids.to(q.dtype), q / q.sum()


def dense(probs: torch.Tensor, support: list[list[int]] | None, vocab: int, device=None) -> torch.Tensor:
    """Draft distributions [γ, V] from their support form (ids + probabilities), on `device`."""
    probs = probs.to(device, torch.float32)
    if support is None:
        return probs
    ids = torch.tensor(support, dtype=torch.long, device=probs.device)
    return torch.zeros(probs.shape[0], vocab, device=probs.device).scatter_add_(1, ids, probs)


def greedy_verdict(top: list[int], confidence: list[float], draft: list[int]) -> Verdict:
    """The greedy verdict from each row's argmax and top-1 probability (already on the host)."""
    k = 0
    while k < len(draft) and top[k] == draft[k]:
        k += 1
    return Verdict(k, top[k], min(confidence[: k + 1]))


def verdict(logits: torch.Tensor, draft: list[int], draft_probs: torch.Tensor | None = None,
            temperature: float = 0.0, seed: int = 0, start: int = 0) -> Verdict:
    """Accept a prefix of `draft` given target `logits` [γ+1, V] at absolute positions start..start+γ.

    Greedy (temperature 0): accept while the draft equals the target's argmax; next token is the
    argmax after the accepted prefix. Sampling: accept d_i with probability min(1, p_i(d_i)/q_i(d_i)),
    on rejection draw from normalise(max(0, p_i - q_i)), after a full accept draw from p_γ: the output
    is distributed exactly as the target's own samples.
    """
    gamma = len(draft)
    if logits.shape[0] != gamma + 1:
        raise ValueError(f"need {gamma + 1} logit rows for a draft of {gamma}, got {logits.shape[0]}")
    if temperature <= 0:
        # one host sync for the whole verdict: the argmax and top-1 probability of every row
        conf_rows, top = torch.softmax(logits.float(), -1).max(-1)
        top, conf_rows = torch.stack([top.double(), conf_rows.double()]).tolist()
        return greedy_verdict([int(t) for t in top], conf_rows, draft)
    if draft_probs is None or draft_probs.shape[0] != gamma:
        raise ValueError("speculative sampling needs the draft's distribution at every drafted position")
    p = probabilities(logits, temperature)
    q = draft_probs.to(p.device, torch.float32)
    rows = torch.arange(gamma, device=p.device)
    ids = torch.tensor(draft, dtype=torch.long, device=p.device)
    # one host sync for every acceptance test: p_i(d_i), q_i(d_i) and each row's top-1 probability
    flat = torch.cat([p[rows, ids], q[rows, ids], p.amax(-1)]).double().tolist()
    p_tok, q_tok, top1 = flat[:gamma], flat[gamma:2 * gamma], flat[2 * gamma:]
    for i, tok in enumerate(draft):
        ratio = p_tok[i] / max(q_tok[i], 1e-30)
        if uniform(seed, start + i, ACCEPT) >= min(1.0, ratio):
            residual = torch.clamp(p[i] - q[i], min=0).cpu()
            residual = residual / residual.sum() if float(residual.sum()) > 0 else p[i].cpu()
            return Verdict(i, sample(residual, seed, start + i, RESIDUAL), min(top1[: i + 1]))
    return Verdict(gamma, sample(p[gamma].cpu(), seed, start + gamma, BONUS), min(top1))
