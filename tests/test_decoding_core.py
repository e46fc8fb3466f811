"""Engines, verdicts, rollback and exit heads of the decoding core, on tiny real transformers models."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from decoding_fixtures import pair, random_image
from spec_edge_cloud.decoding.draft import DraftEngine
from spec_edge_cloud.decoding.sequence import CachedSequence
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verify import verdict
from spec_edge_cloud.modeling.bundle import Prompt
from spec_edge_cloud.modeling.exit_heads import ExitHeads, load_or_init_exit_heads
from spec_edge_cloud.modeling.exit_training import (agreement, draft_rounds, round_agreement, teacher_data,
                                                    train_exit_heads)
from spec_edge_cloud.modeling.layers import decoder_parts


def fresh_logits(bundle, tokens, prompt):
    seq = CachedSequence(bundle, Prompt(tokens, prompt.image, prompt.vision))
    return seq.feed_tail()[-1]


@pytest.mark.parametrize("kind", ["llama", "qwen"])
def test_rollback_leaves_caches_as_a_fresh_prefill_would(kind):
    target, draft = pair(kind, 4)
    prompt = target.encode("w5 w6 w7", random_image(4) if kind == "qwen" else None)
    eng = DraftEngine(draft)
    eng.prefill(prompt)
    tseq = TargetEngine(target).start(prompt)
    misses = 0
    for _ in range(6):
        base = len(eng.tokens)
        d = eng.draft(4)
        result = tseq.verify(d.tokens)
        k, b = result.verdict.accepted, result.verdict.next_token
        misses += k < len(d.tokens)
        eng.rollback(base + k)
        eng.append(b)
        assert eng.tokens == tseq.tokens
        # both caches now give the logits a fresh prefill of the same prefix gives
        for bundle, seq in ((draft, eng.seq), (target, tseq.seq)):
            cached = seq.feed_tail()[-1]
            fresh = fresh_logits(bundle, list(seq.tokens), prompt)
            torch.testing.assert_close(cached, fresh, atol=1e-4, rtol=1e-4)
    assert misses > 0, "no miss happened: rollback was not exercised"


def test_sequences_keep_their_rope_positions_out_of_the_shared_model():
    """Qwen2-VL, left to itself, keeps the M-RoPE delta of the last image prompt in the model object.
    Sequences that share one model (sessions on the cloud, robots in threads of one test) must neither
    write nor read it: a robot thread once read another's None there and crashed."""
    target, _ = pair("qwen", 5)
    a, b = target.encode("w5 w6", random_image(5)), target.encode("w7 w8 w9", random_image(6))
    alone = CachedSequence(target, a).feed_tail()[-1]
    seq_a = CachedSequence(target, a)
    seq_a.prefill()
    stale = torch.full((1, 1), 999)
    target.model.model.rope_deltas = stale  # whatever another sequence's pass left behind
    CachedSequence(target, b).prefill()
    assert target.model.model.rope_deltas is stale
    assert seq_a.rope_delta != 0  # the image shifts the text positions: the delta is really in use
    assert torch.allclose(seq_a.feed_tail()[-1], alone, atol=1e-5)


def test_greedy_verdict_accepts_the_matching_prefix():
    logits = torch.full((4, 10), -5.0)
    for i, t in enumerate([3, 4, 9, 1]):
        logits[i, t] = 5.0
    assert verdict(logits, [3, 4, 5]).accepted == 2 and verdict(logits, [3, 4, 5]).next_token == 9
    assert verdict(logits, [3, 4, 9]).accepted == 3 and verdict(logits, [3, 4, 9]).next_token == 1
    assert verdict(logits, [7, 4, 9]).accepted == 0 and verdict(logits, [7, 4, 9]).next_token == 3
    with pytest.raises(ValueError):
        verdict(logits, [1, 2])


@pytest.mark.parametrize("gamma", [1, 3])
def test_speculative_sampling_preserves_the_target_distribution(gamma):
    """Chi-square: the first emitted token follows the target's p, whatever the draft's q."""
    g = torch.Generator().manual_seed(0)
    vocab = 6
    t_logits = torch.randn(gamma + 1, vocab, generator=g) * 1.5
    q = torch.softmax(torch.randn(gamma, vocab, generator=g) * 1.5, -1)
    p0 = torch.softmax(t_logits[0].double(), -1).numpy()
    n, counts = 6000, np.zeros(vocab)
    for seed in range(n):
        d = [int(torch.multinomial(q[i], 1, generator=g)) for i in range(gamma)]
        v = verdict(t_logits, d, q, temperature=1.0, seed=seed)
        counts[d[0] if v.accepted >= 1 else v.next_token] += 1
    stat = chisquare(counts, p0 / p0.sum() * n)
    assert stat.pvalue > 1e-3, (counts / n, p0)
    # and a draft that matches the target exactly is always accepted
    exact = torch.softmax(t_logits[:gamma], -1)
    d = [int(torch.multinomial(exact[i], 1, generator=g)) for i in range(gamma)]
    assert verdict(t_logits, d, exact, temperature=1.0, seed=1).accepted == gamma


def test_sampling_uses_the_same_randomness_for_early_and_final_verdicts():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 8, generator=g)
    q = torch.softmax(torch.randn(3, 8, generator=g), -1)
    d = [1, 2, 3]
    assert verdict(logits, d, q, 1.0, seed=9, start=40) == verdict(logits.clone(), d, q, 1.0, seed=9, start=40)


def test_exit_at_the_last_layer_agrees_with_the_final_verdict():
    target, draft = pair("llama", 2)
    heads = ExitHeads([target.model.config.num_hidden_layers], target.hidden_size, 8)
    eng = DraftEngine(draft)
    prompt = target.encode("w3 w8")
    eng.prefill(prompt)
    tseq = TargetEngine(target, heads).start(prompt)
    for _ in range(8):
        d = eng.draft(3)
        res = tseq.verify(d.tokens)
        assert [(e.verdict.accepted, e.verdict.next_token) for e in res.exits] == \
            [(res.verdict.accepted, res.verdict.next_token)]
        eng.rollback(len(tseq.tokens) - 1)
        eng.append(tseq.tokens[-1])


def test_exit_verdicts_arrive_before_the_pass_ends():
    target, draft = pair("llama", 2, layers=4)
    heads = ExitHeads([1, 2], target.hidden_size, 8)
    seen = []
    tseq = TargetEngine(target, heads).start(target.encode("w3 w8"))
    res = tseq.verify([10, 11, 12], on_exit=lambda ev: seen.append((ev.layer, ev.at)))
    assert [layer for layer, _ in seen] == [1, 2]
    assert seen[0][1] <= seen[1][1] <= res.seconds


def test_distillation_raises_exit_agreement():
    target, _ = pair("llama", 6, layers=4)
    prompts = [target.encode(f"w{i} w{i + 3} w{(i * 7) % 50 + 1}") for i in range(1, 41)]
    layers = [1, 2]
    train, held = teacher_data(target, prompts[:32], layers, 24), teacher_data(target, prompts[32:], layers, 24)
    heads = ExitHeads(layers, target.hidden_size, 32)
    before = agreement(heads, target, held)
    train_exit_heads(heads, target, train, steps=150, lr=5e-3)
    after = agreement(heads, target, held)
    assert all(after[k] > before[k] + 0.1 for k in layers), (before, after)


def test_rounds_of_a_greedy_draft_end_at_the_first_rejection_or_after_the_bonus():
    answer = [5, 6, 7, 8, 9, 10, 11, 12]
    proposed = [5, 6, 0, 8, 9, 10, 11, 12]      # wrong at position 2 only
    assert draft_rounds(answer, proposed, 4) == [(0, 3), (3, 8)]  # 2 accepted + correction; 4 + bonus
    assert draft_rounds(answer, proposed, 2) == [(0, 3), (3, 6), (6, 8)]
    assert draft_rounds([1, 2], [0, 0], 4) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("attend", [(), (1,)])
def test_round_agreement_on_teacher_data_is_what_speculative_decoding_measures(attend):
    """The rounds `teacher_data` cuts with a draft are those the real decoding core makes (spec-ee, every
    exit reporting), and an exit's round verdict is the final one exactly when its argmax agrees over
    the round: the same figure both ways, for an exit that attends over the sequence too (teacher-forced
    whole sequences offline, its cache filled pass by pass in decoding). Then the round-verdict
    objective raises it."""
    from spec_edge_cloud.training.spec_eval import speculate
    target, draft = pair("llama", 7, noise=0.15, layers=4)
    prompts = [target.encode(f"w{i} w{i + 3} w{(i * 7) % 50 + 1}") for i in range(1, 31)]
    heads = ExitHeads([1, 2], target.hidden_size, 16, attend=list(attend), attention_heads=2,
                      positions=target.max_positions)
    if attend:   # the attention away from its zero start, so that the comparison reads it
        torch.nn.init.normal_(heads.attention["1"].out.weight, std=0.2)
    held = teacher_data(target, prompts[24:], heads.layers, 12, draft=draft, gamma=4, attend=list(attend))
    spec = speculate(draft, TargetEngine(target, heads), prompts[24:], gamma=4, max_new_tokens=12)
    assert len(held.rounds) == spec["rounds"] and spec["lossless_mismatches"] == []
    offline = round_agreement(heads, target, held)
    assert {str(k): v for k, v in offline.items()} == pytest.approx(spec["exit_verdict_agreement"])
    with pytest.raises(ValueError, match="no drafted rounds"):
        round_agreement(heads, target, teacher_data(target, prompts[:2], heads.layers, 12))
    train = teacher_data(target, prompts[:24], heads.layers, 12, draft=draft, gamma=4, attend=list(attend))
    train_exit_heads(heads, target, train, steps=100, lr=5e-3, ce_weight=1.0, sequence_batch=8)
    after = round_agreement(heads, target, held)
    assert all(after[k] > offline[k] for k in heads.layers), (offline, after)


def test_exit_heads_round_trip_and_untrained_fallback(tmp_path, caplog):
    target, _ = pair("llama", 1)
    parts = decoder_parts(target.model)
    heads = ExitHeads([1, 3], target.hidden_size, 8, trained=True)
    torch.nn.init.normal_(heads.adapters["1"].up.weight)
    heads.save(tmp_path, agreement={"1": 0.5})
    loaded = load_or_init_exit_heads(tmp_path, parts, target.hidden_size)
    assert loaded.layers == [1, 3] and loaded.trained and loaded.meta["agreement"] == {"1": 0.5}
    torch.testing.assert_close(loaded.adapters["1"].up.weight, heads.adapters["1"].up.weight)
    with pytest.raises(ValueError, match="no trained head"):
        load_or_init_exit_heads(tmp_path, parts, target.hidden_size, layers=[2])
    untrained = load_or_init_exit_heads(tmp_path / "none", parts, target.hidden_size)
    assert not untrained.trained and "untrained exits" in caplog.text


def test_a_greedy_verdict_breaks_ties_as_the_targets_argmax_does():
    """Equal top probabilities (common in bfloat16) go to the lower token id, as the target's own
    greedy decoding picks them; the second choice is the other one of the tie."""
    logits = torch.full((2, 8), -4.0)
    logits[:, 3] = logits[:, 6] = 2.0
    v = verdict(logits, [3])
    assert (v.accepted, v.next_token) == (1, int(logits[1].argmax()))
    assert v.next_token == 3 and v.alternatives == ((1, 6), (0, 6))
