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
    # other likely verdicts (accepted, next), likeliest first: the second choice after the same
    # accepted count, then the best next token after one draft token fewer (fan-out pre-drafting)
    alternatives: tuple[tuple[int, int], ...] = ()


def alternatives(k: int, next_token: int, second: list[int] | dict[int, int], draft: list[int]) -> tuple[tuple[int, int], ...]:
    """The verdicts a final layer likely gives when it disagrees with (k, next_token): `second[i]` is
    row i's likeliest token after its first choice (row k's first choice is `next_token`; row k-1's
    is draft[k-1], accepted)."""
    alt = [(k, second[k])] if second[k] != next_token else []
    if k > 0 and second[k - 1] != draft[k - 1]:
        alt.append((k - 1, second[k - 1]))
    return tuple(alt)


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


def greedy_verdict(top: list[int], confidence: list[float], draft: list[int],
                   second: list[int] | None = None) -> Verdict:
    """The greedy verdict from each row's argmax and top-1 probability (already on the host), with
    its alternatives when each row's second choice is given."""
    k = 0
    while k < len(draft) and top[k] == draft[k]:
        k += 1
    return Verdict(k, top[k], min(confidence[: k + 1]),
                   alternatives(k, top[k], second, draft) if second is not None else ())


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
        # one host sync for the whole verdict: each row's two likeliest tokens and top-1 probability.
        # The first is max()'s index, as in the target's own greedy decoding: topk breaks ties between
        # equal probabilities (common in bfloat16) differently, and the output would not be the target's.
        probs = torch.softmax(logits.float(), -1)
        conf_rows, top = probs.max(-1)
        second = probs.scatter(-1, top[:, None], -1.0).max(-1).indices
        top, second, conf_rows = torch.stack([top.double(), second.double(), conf_rows.double()]).tolist()
        return greedy_verdict([int(t) for t in top], conf_rows, draft, [int(t) for t in second])
    if gamma and (draft_probs is None or draft_probs.shape[0] != gamma):
        raise ValueError("speculative sampling needs the draft's distribution at every drafted position")
    p = probabilities(logits, temperature)
    # nothing drafted (cloud decoding): no q, and the verdict is the target's own draw at `start`
    q = draft_probs.to(p.device, torch.float32) if gamma else p[:0]
    rows = torch.arange(gamma, device=p.device)
    ids = torch.tensor(draft, dtype=torch.long, device=p.device)
    # one host sync for every acceptance test: p_i(d_i), q_i(d_i) and each row's top-1 probability
    top2 = p.topk(min(2, p.shape[-1]), -1)
    flat = torch.cat([p[rows, ids], q[rows, ids], top2.values[:, 0], top2.indices.flatten().double()]).double().tolist()
    p_tok, q_tok, top1 = flat[:gamma], flat[gamma:2 * gamma], flat[2 * gamma:3 * gamma + 1]
    ranked = [int(t) for t in flat[3 * gamma + 1:]]
    width = top2.indices.shape[1]

    def likeliest_other(i: int, token: int) -> int:  # row i's likeliest token but `token` (itself if none)
        return next((t for t in ranked[i * width: (i + 1) * width] if t != token), token)

    def ending(i: int, token: int) -> Verdict:
        second = {i: likeliest_other(i, token)}
        if i > 0:
            second[i - 1] = likeliest_other(i - 1, draft[i - 1])
        return Verdict(i, token, min(top1[: i + 1]), alternatives(i, token, second, draft))

    for i, tok in enumerate(draft):
        ratio = p_tok[i] / max(q_tok[i], 1e-30)
        if uniform(seed, start + i, ACCEPT) >= min(1.0, ratio):
            residual = torch.clamp(p[i] - q[i], min=0).cpu()
            residual = residual / residual.sum() if float(residual.sum()) > 0 else p[i].cpu()
            return ending(i, sample(residual, seed, start + i, RESIDUAL))
    return ending(gamma, sample(p[gamma].cpu(), seed, start + gamma, BONUS))
