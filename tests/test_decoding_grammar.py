"""Tokens the answer's grammar forces, proposed without a draft step (`draft_grammar`): a step saved
per forced token, and the output still the target's own, greedy and sampled."""
from __future__ import annotations

import pytest

from decoding_fixtures import pair, target_alone
from test_decoding_sampling import chi_square_pvalue, sampling_pair
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.draft import DraftEngine
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import GREEDY_LOSSLESS, DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads


def every_third(words: list[str]) -> str | None:
    """A made-up grammar of the tiny models' words: `w3` after every third word of the answer. The
    target mostly disagrees, which is the point: a wrong forced token must cost nothing but a miss."""
    return "w3" if len(words) % 3 == 2 else None


def test_a_forced_token_takes_no_draft_step():
    _, draft = pair("llama", 0)
    prompt = draft.encode("w4 w9 w1")
    engine = DraftEngine(draft)
    engine.prefill(prompt)
    steps = []
    feed = engine.seq.feed_tail
    engine.seq.feed_tail = lambda *a: steps.append(1) or feed(*a)   # counts the model's steps
    w3 = draft.tokenizer.convert_tokens_to_ids("w3")
    n = len(prompt.input_ids)
    d = engine.draft(5, lambda tokens: w3 if len(tokens) - n in (0, 3) else None)
    assert d.tokens[0] == w3 and d.tokens[3] == w3 and d.forced == 2 and len(steps) == 3
    engine.seq.feed_tail = feed
    assert engine.draft(1).tokens                      # the forced tokens reached the cache with the next step


def test_every_greedy_mode_with_forced_tokens_equals_the_target_alone():
    target, draft = pair("llama", 1)
    prompt = target.encode("w4 w11 w2")
    ref = target_alone(target, prompt, 24)
    engine = TargetEngine(target, ExitHeads([1, 2], target.hidden_size, 16))
    for mode in GREEDY_LOSSLESS:
        link = InProcessLink(VerifierService(engine))
        try:
            config = DecodeConfig(mode=mode, max_new_tokens=24, exit_threshold=0.0, draft_grammar="on")
            resp = SpecClient(draft, link, config, grammar=every_third).generate(prompt)
        finally:
            link.close()
        assert resp.tokens == ref and resp.verified, mode
        assert mode == "cloud" or resp.metrics.grammar_forced > 0 or resp.metrics.switched_to_cloud_at is not None


def test_draft_grammar_without_a_grammar_is_refused():
    _, draft = pair("llama", 0)
    with pytest.raises(ValueError, match="draft_grammar needs"):
        SpecClient(draft, object(), DecodeConfig(draft_grammar="on"))
    with pytest.raises(ValueError, match="draft_grammar must be"):
        DecodeConfig(draft_grammar="true")
    auto = DecodeConfig(mode="adaptive")                             # auto: used in adaptive where given
    assert SpecClient(draft, object(), auto, grammar=every_third).grammar is every_third
    assert SpecClient(draft, object(), auto).grammar is None
    assert SpecClient(draft, object(), DecodeConfig(mode="spec-ee-pre"), grammar=every_third).grammar is None


def test_sampling_with_forced_tokens_follows_the_target():
    """A forced token is a point-mass draft (q = 1): speculative sampling stays exact (the draft sends
    its 2 likeliest tokens: the point mass in that support form, the harder case)."""
    target, draft, prompt = sampling_pair()
    link = InProcessLink(VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 8))))
    try:
        pvalue = chi_square_pvalue(target, draft, prompt, link, "spec", n=250, draft_top_k=2,
                                   draft_grammar="on", grammar=lambda words: "w2" if len(words) == 1 else None)
    finally:
        link.close()
    assert pvalue > 1e-3
