"""Lossless property: every greedy mode returns token for token what the target alone produces."""
import pytest

from decoding_fixtures import pair, random_image, target_alone
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import GREEDY_LOSSLESS, DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads


def run_all_modes(target, draft, prompt, max_new, gamma=4, threshold=0.0, rtt=0.0, heads_layers=(1, 2)):
    engine = TargetEngine(target, ExitHeads(list(heads_layers), target.hidden_size, 16))
    out = {}
    for mode in GREEDY_LOSSLESS:
        link = InProcessLink(VerifierService(engine), rtt_s=rtt)
        try:
            client = SpecClient(draft, link, DecodeConfig(mode=mode, gamma=gamma, max_new_tokens=max_new,
                                                          exit_threshold=threshold))
            out[mode] = client.generate(prompt)
        finally:
            link.close()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_llama_pair_every_greedy_mode_equals_target(seed, gamma):
    target, draft = pair("llama", seed)
    prompt = target.encode(f"w{seed + 3} w{gamma + 7} w11 w2")
    ref = target_alone(target, prompt, 24)
    for mode, resp in run_all_modes(target, draft, prompt, 24, gamma=gamma).items():
        assert resp.tokens == ref, f"{mode} (seed {seed}, gamma {gamma}) differs from the target alone"
        assert resp.verified


@pytest.mark.parametrize("seed", [0, 1])
def test_small_vocab_pair_stops_at_eos_like_the_target(seed):
    """A 12-word vocabulary makes EOS likely: stopping must match the target alone too."""
    for s in range(seed * 10, seed * 10 + 10):
        target, draft = pair("llama", s, vocab=5, noise=0.2)
        prompt = target.encode("w1 w2")
        ref = target_alone(target, prompt, 40)
        if ref and ref[-1] in target.eos_ids and len(ref) < 40:
            break
    else:
        pytest.fail("no seed produced an early EOS; the test lost its point")
    for mode, resp in run_all_modes(target, draft, prompt, 40).items():
        assert resp.tokens == ref, mode


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qwen2vl_pair_on_random_images_equals_target(seed):
    target, draft = pair("qwen", seed)
    prompt = target.encode("w4 w9 w1", random_image(seed))
    ref = target_alone(target, prompt, 20)
    for mode, resp in run_all_modes(target, draft, prompt, 20, gamma=3).items():
        assert resp.tokens == ref, f"{mode} differs from the target alone on image seed {seed}"


@pytest.mark.parametrize("exit_layer,expect", [(4, "hits"), (2, "misses")])
def test_lossless_with_link_delay_through_predraft_hits_and_misses(exit_layer, expect):
    """With a round trip, pre-drafts race the final verdicts; output must not change.

    An exit at the last layer always agrees with the final verdict (every pre-draft hits); an
    untrained exit at layer 2 mostly disagrees (pre-drafts miss and both sides roll back).
    """
    target, draft = pair("llama", 5, noise=0.1)
    prompt = target.encode("w3 w4 w5")
    ref = target_alone(target, prompt, 24)
    results = run_all_modes(target, draft, prompt, 24, rtt=0.02, heads_layers=(exit_layer,))
    for mode, resp in results.items():
        assert resp.tokens == ref, mode
    pre = results["spec-ee-pre"].metrics
    assert pre.predrafts > 0
    if expect == "hits":
        assert pre.hits == pre.predrafts and pre.exit_agreement() == {4: 1.0}
    else:
        assert pre.hits < pre.predrafts


def test_stop_string_ends_every_mode_where_the_target_would():
    target, draft = pair("llama", 3)
    prompt = target.encode("w7 w9 w13")
    ref = target_alone(target, prompt, 24)
    stop_word = target.decode([ref[6]])
    cut = next(i for i in range(len(ref)) if stop_word in target.decode(ref[: i + 1]))
    engine = TargetEngine(target, ExitHeads([2], target.hidden_size, 8))
    for mode in GREEDY_LOSSLESS:
        link = InProcessLink(VerifierService(engine))
        try:
            cfg = DecodeConfig(mode=mode, max_new_tokens=24, stop=[stop_word], exit_threshold=0.0)
            assert SpecClient(draft, link, cfg).generate(prompt).tokens == ref[: cut + 1], mode
        finally:
            link.close()


@pytest.mark.parametrize("prefill", [True, False])
def test_static_cache_with_an_image_equals_target_before_and_after_its_prefill(prefill):
    """The static cache's batched pass has no image input: a first pass over the prompt goes alone
    through the model's forward, where the image is."""
    from spec_edge_cloud.decoding.static_cache import CacheConfig
    target, _ = pair("qwen2vl", 7)
    prompt = target.encode("w4 w9 w1", random_image(0))
    ref = target_alone(target, prompt, 6)
    seq = TargetEngine(target, cache=CacheConfig(kind="static", slots=1, max_len=96)).start(prompt)
    if prefill:
        seq.prefill()
    seq.verify(ref[:2])
    assert seq.seq.generated == ref[:3]
