"""Several robots' rounds verified in one padded forward pass: lossless, and the same verdicts as alone.

Each robot's drafts are the target's own continuation with a token corrupted at a random place (or
not at all), so rows accept different numbers of tokens, caches grow to different lengths, and rows
roll back independently: the padding, masks, positions and per-row cache slices all matter.
"""
from __future__ import annotations

import random

import pytest
import torch

from decoding_fixtures import pair, random_image, target_alone
from spec_edge_cloud.decoding.sequence import CachedSequence, forward_rows
from spec_edge_cloud.decoding.target import TargetEngine, VerifyRequest
from spec_edge_cloud.modeling.exit_heads import ExitHeads

PROMPTS = ["w4 w9 w1", "w7 w2 w11 w12 w3 w5 w8", "w30", "w6 w6 w14 w2 w19"]


def corrupted_draft(rng: random.Random, truth: list[int], gamma: int, vocab: int) -> list[int]:
    draft = list(truth[:gamma])
    if draft and rng.random() < 0.7:
        draft[rng.randrange(len(draft))] = rng.randrange(3, vocab)
    return draft


def batched_decode(engine: TargetEngine, prompts, refs, seed: int, max_new: int):
    """Greedy speculative decoding of every prompt at once, all live rows in one pass per step."""
    rng = random.Random(seed)
    vocab = engine.bundle.model.config.get_text_config().vocab_size
    seqs = [engine.start(p) for p in prompts]
    for s in seqs:
        s.prefill()
    rows_seen, exit_verdicts = set(), []
    while True:
        live = [i for i, s in enumerate(seqs) if len(s.seq.generated) < max_new and
                not (s.seq.generated and s.seq.generated[-1] in engine.bundle.eos_ids)]
        if not live:
            break
        requests = []
        for i in live:
            done = len(seqs[i].seq.generated)
            draft = corrupted_draft(rng, refs[i][done:], rng.randint(0, 5), vocab)
            requests.append(VerifyRequest(seqs[i], draft, on_exit=exit_verdicts.append))
        results = engine.verify(requests)
        rows_seen.update(r.rows for r in results)  # 1 each while a one-token prompt is not yet cached
        assert {r.rows for r in results} in ({len(requests)}, {1})
    return [s.seq.generated[:max_new] for s in seqs], rows_seen, exit_verdicts


@pytest.mark.parametrize("kind,seed", [("llama", 0), ("llama", 1), ("qwen2vl", 2)])
def test_batched_verification_equals_the_target_alone(kind, seed):
    target, _ = pair(kind, seed)
    prompts = [target.encode(text, random_image(seed + i) if kind == "qwen2vl" and i % 2 == 0 else None)
               for i, text in enumerate(PROMPTS)]
    refs = [target_alone(target, p, 16) for p in prompts]
    engine = TargetEngine(target, ExitHeads([1, 3], target.hidden_size, 8))
    out, rows_seen, exits = batched_decode(engine, prompts, refs, seed, 16)
    assert out == [r[:16] for r in refs]
    assert max(rows_seen) == len(PROMPTS), "no pass held every robot: the test lost its point"
    assert {e.layer for e in exits} == {1, 3}


def test_batched_early_and_final_verdicts_equal_single_passes():
    target, _ = pair("qwen2vl", 5)
    engine = TargetEngine(target, ExitHeads([1, 2, 3], target.hidden_size, 8, trained=True))
    with torch.no_grad():
        for p in engine.heads.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    prompts = [target.encode(t, random_image(i)) for i, t in enumerate(PROMPTS[:3])]
    alone, together = [engine.start(p) for p in prompts], [engine.start(p) for p in prompts]
    for s in alone + together:
        s.prefill()
    rng = random.Random(0)
    for _ in range(4):
        drafts = [[rng.randrange(3, 60) for _ in range(rng.randint(0, 4))] for _ in prompts]
        one = [s.verify(d) for s, d in zip(alone, drafts)]
        many = engine.verify([VerifyRequest(s, d) for s, d in zip(together, drafts)])
        for a, b in zip(one, many):
            assert (a.verdict.accepted, a.verdict.next_token) == (b.verdict.accepted, b.verdict.next_token)
            assert [(e.layer, e.verdict.accepted, e.verdict.next_token) for e in a.exits] == \
                   [(e.layer, e.verdict.accepted, e.verdict.next_token) for e in b.exits]
            assert abs(a.verdict.confidence - b.verdict.confidence) < 1e-4
    assert [s.tokens for s in alone] == [s.tokens for s in together]


def test_rows_get_back_their_own_cache():
    target, _ = pair("llama", 3)
    prompts = [target.encode(t) for t in PROMPTS if " " in t]  # a one-token prompt has nothing cached yet
    a, b = [CachedSequence(target, p) for p in prompts], [CachedSequence(target, p) for p in prompts]
    for s in a + b:
        s.prefill()
    tails = [s.tail([5, 6][: i % 3]) for i, s in enumerate(a)]
    batched = forward_rows(a, tails)
    single = [s.forward(s.tail([5, 6][: i % 3])) for i, s in enumerate(b)]
    for x, y, sa, sb in zip(batched, single, a, b):
        assert x.shape == y.shape and torch.allclose(x, y, atol=1e-4)
        assert sa.cached == sb.cached == sa.cache.get_seq_length()
        for la, lb in zip(sa.cache.layers, sb.cache.layers):
            assert torch.allclose(la.keys, lb.keys, atol=1e-5) and torch.allclose(la.values, lb.values, atol=1e-5)


def test_a_sequence_before_its_prefill_is_not_batched():
    target, _ = pair("qwen2vl", 4)
    engine = TargetEngine(target)
    fresh = engine.start(target.encode("w4", random_image(1)))  # image not yet in the cache
    ready = engine.start(target.encode("w5 w6", random_image(2)))
    ready.prefill()
    assert not fresh.seq.batchable and ready.seq.batchable
    with pytest.raises(ValueError, match="batched pass"):
        forward_rows([fresh.seq, ready.seq], [[1], [2]])
    results = engine.verify([VerifyRequest(fresh, []), VerifyRequest(ready, [])])
    assert [r.rows for r in results] == [1, 1]  # each got a pass of its own
    assert fresh.seq.batchable
