"""Exits that attend over the sequence: the verdict a pass gives equals the one read off a whole
teacher-forced sequence, whatever the pass fed (a prompt, a batch, a rolled-back draft), with
either cache; the heads save and load whole; greedy decoding stays the target's own."""
from __future__ import annotations

import random

import pytest
import torch

from decoding_fixtures import pair, random_image, target_alone
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import GREEDY_LOSSLESS, DecodeConfig
from spec_edge_cloud.decoding.static_cache import CacheConfig
from spec_edge_cloud.decoding.target import TargetEngine, VerifyRequest
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.decoding.verify import verdict
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.layers import decoder_parts

PROMPTS = ["w4 w9 w1", "w7 w2 w11 w12 w3 w5 w8", "w6 w6 w14 w2 w19"]


def attending_heads(target, seed: int) -> ExitHeads:
    heads = ExitHeads([1, 2, 3], target.hidden_size, 8, trained=True, attend=[1, 3], attention_heads=2,
                      positions=target.max_positions)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every projection away from its identity start, so attention shows
        for p in heads.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return heads


@torch.no_grad()
def whole_sequence_verdict(engine: TargetEngine, prompt, tokens: list[int], draft: list[int], layer: int):
    """The exit's verdict on `draft` after `tokens`, from one teacher-forced pass of the whole sequence."""
    full = tokens + draft
    ids = torch.tensor([full])
    kw = dict(prompt.vision, mm_token_type_ids=(ids == engine.bundle.image_token_id).int()) if prompt.vision else {}
    parts = decoder_parts(engine.bundle.model)
    seen = {}
    hook = parts.layers[layer - 1].register_forward_hook(lambda _m, _i, out: seen.setdefault("h", out))
    try:
        engine.bundle.model(input_ids=ids, **kw)
    finally:
        hook.remove()
    hidden = seen["h"][0] if isinstance(seen["h"], tuple) else seen["h"]
    logits = engine.heads.logits(layer, hidden, parts)[0, len(tokens) - 1:]
    return verdict(logits, draft, None, 0.0, 0, len(tokens) - 1)


@pytest.mark.parametrize("kind,cache", [("qwen2vl", "dynamic"), ("qwen2vl", "static"), ("llama", "dynamic")])
def test_a_pass_gives_the_verdict_of_the_whole_sequence(kind, cache):
    target, _ = pair(kind, 7)
    engine = TargetEngine(target, attending_heads(target, 1), cache=CacheConfig(kind=cache, slots=4, max_len=96))
    prompts = [target.encode(t, random_image(i) if kind == "qwen2vl" else None) for i, t in enumerate(PROMPTS)]
    refs = [target_alone(target, p, 12) for p in prompts]
    seqs = [engine.start(p) for p in prompts]
    seqs[0].prefill()
    seqs[1].prefill()   # the third feeds its whole prompt in its first pass
    rng, checked = random.Random(0), 0
    for _ in range(5):
        requests, seen = [], []
        for i, s in enumerate(seqs):
            done = len(s.seq.generated)
            draft = list(refs[i][done:done + rng.randint(0, 4)])
            if draft and rng.random() < 0.6:
                draft[rng.randrange(len(draft))] = rng.randrange(3, 60)   # a rejection rolls the cache back
            requests.append(VerifyRequest(s, draft, on_exit=lambda ev, i=i, s=s, d=draft:
                                          seen.append((i, list(s.tokens), d, ev))))
        engine.verify(requests)
        for i, tokens, draft, ev in seen:
            want = whole_sequence_verdict(engine, prompts[i], tokens, draft, ev.layer)
            assert (ev.verdict.accepted, ev.verdict.next_token) == (want.accepted, want.next_token)
            assert abs(ev.verdict.confidence - want.confidence) < 1e-4
            checked += ev.layer in (1, 3)
    assert checked >= 20, "too few attending verdicts compared"
    for s, ref in zip(seqs, refs):  # the target's own tokens (up to its end of sequence)
        n = min(len(s.seq.generated), len(ref))
        assert n and s.seq.generated[:n] == ref[:n]


def test_every_greedy_mode_with_attending_exits_is_the_targets_own():
    target, draft = pair("qwen2vl", 3)
    engine = TargetEngine(target, attending_heads(target, 2))
    prompt = target.encode("w3 w8 w2", random_image(5))
    ref = target_alone(target, prompt, 16)
    for mode in GREEDY_LOSSLESS:
        link = InProcessLink(VerifierService(engine))
        try:
            client = SpecClient(draft, link, DecodeConfig(mode=mode, gamma=4, max_new_tokens=16, exit_threshold=0.0))
            assert client.generate(prompt).tokens == ref, mode
        finally:
            link.close()


def test_attending_heads_save_and_load_whole(tmp_path):
    target, _ = pair("llama", 2)
    heads = attending_heads(target, 3)
    heads.save(tmp_path, note="x")
    back = ExitHeads.load(tmp_path)
    assert (back.layers, back.attend, back.attention_heads, back.positions) == ([1, 2, 3], [1, 3], 2,
                                                                                 target.max_positions)
    assert back.meta == {"note": "x"}
    for (k, a), (_, b) in zip(heads.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_attending_exits_are_refused_where_they_cannot_run():
    target, _ = pair("llama", 2)
    with pytest.raises(ValueError, match="not exit layers"):
        ExitHeads([2], target.hidden_size, 8, attend=[1], positions=64)
    with pytest.raises(ValueError, match="eager passes only"):
        TargetEngine(target, attending_heads(target, 0), cache=CacheConfig(kind="static", compile=True))
    heads = ExitHeads([1], target.hidden_size, 8, attend=[1], positions=4)
    with pytest.raises(ValueError, match="past the attending exit's 4 positions"):
        heads.logits(1, torch.zeros(1, 5, target.hidden_size), decoder_parts(target.model))
