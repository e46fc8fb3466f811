"""`adaptive`: picks speculation where it pays and plain cloud decoding where it does not, losslessly."""
import pytest

from decoding_fixtures import pair, profile_file, target_alone
from spec_edge_cloud.decoding.adaptive import AdaptiveController, expected_tokens
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.timing import Pacer, TimingProfile
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads


def test_expected_tokens_per_round():
    assert expected_tokens(0.0, 4) == pytest.approx(1.0)
    assert expected_tokens(0.6, 4) == pytest.approx((1 - 0.6 ** 5) / 0.4)
    assert expected_tokens(1.0, 4) == pytest.approx(5.0, rel=0.02)


def feed(ad, step_s, pass_s, draft_s, rtt_s, acceptance, rounds=10):
    ad.observe_step(step_s)
    for _ in range(rounds):
        ad.observe_draft(draft_s * 4, 4)
        ad.observe_round(4, round(4 * acceptance), pass_s, 5, rtt_s)


def test_cost_model_prefers_cloud_for_a_fast_target_behind_a_slow_link():
    ad = AdaptiveController()
    feed(ad, step_s=0.003, pass_s=0.004, draft_s=0.002, rtt_s=0.120, acceptance=0.75)
    assert ad.choose_mode() == "cloud"


def test_cost_model_prefers_speculation_for_a_slow_target():
    """The paper's Go2 regime: verification 620 ms, drafting 72 ms/token, 120 ms round trip."""
    ad = AdaptiveController()
    feed(ad, step_s=0.60, pass_s=0.62, draft_s=0.072, rtt_s=0.120, acceptance=0.6)
    assert ad.choose_mode() == "spec" and 1 <= ad.best_gamma() <= 8


def run_adaptive(target, draft, prompts, rtt_s, pacer=None, draft_pacer=None):
    engine = TargetEngine(target, ExitHeads([target.model.config.num_hidden_layers], target.hidden_size, 8), pacer)
    ad = AdaptiveController(gamma=4)
    out = []
    for prompt in prompts:
        link = InProcessLink(VerifierService(engine), rtt_s=rtt_s)
        try:
            cfg = DecodeConfig(mode="adaptive", max_new_tokens=16, exit_threshold=0.0)
            out.append(SpecClient(draft, link, cfg, adaptive=ad, pacer=draft_pacer).generate(prompt))
        finally:
            link.close()
    return out, ad


def test_adaptive_speculates_losslessly_when_the_target_is_slow(tmp_path):
    target, draft = pair("llama", 8, noise=0.02, layers=8)
    profile = TimingProfile.load(profile_file(tmp_path))
    prompts = [target.encode(f"w{i} w{i + 6} w{i + 2}") for i in range(1, 4)]
    results, ad = run_adaptive(target, draft, prompts, 0.02, Pacer(profile), Pacer(profile))
    for prompt, r in zip(prompts, results):
        assert r.tokens == target_alone(target, prompt, 16)
        assert r.metrics.rounds > 0 and r.metrics.switched_to_cloud_at is None
    assert ad.choose_mode() == "spec"


def test_adaptive_switches_to_cloud_decoding_for_tiny_models_behind_a_slow_link():
    target, draft = pair("llama", 9, noise=0.1, layers=4)
    prompts = [target.encode(f"w{i} w{i + 3}") for i in range(1, 4)]
    results, ad = run_adaptive(target, draft, prompts, 0.05)
    for prompt, r in zip(prompts, results):
        assert r.tokens == target_alone(target, prompt, 16)
    first, later = results[0].metrics, results[-1].metrics
    assert first.switched_to_cloud_at is not None, "it should leave speculation within the first response"
    assert later.rounds == 0, "later responses should start in plain cloud decoding"


def test_acceptance_is_the_per_token_probability_of_the_cost_model():
    """Rounds accepting k of 4 with a per-token a: k acceptances in k + 1 trials (4 in 4)."""
    import random
    rng = random.Random(0)
    ad = AdaptiveController(decay=1.0)
    for _ in range(2000):
        k = 0
        while k < 4 and rng.random() < 0.6:
            k += 1
        ad.observe_round(4, k, 0.01, 5, 0.05)
    assert ad.acceptance == pytest.approx(0.6, abs=0.03)


def test_measured_speculation_cost_decides_over_the_model():
    ad = AdaptiveController()
    feed(ad, step_s=0.05, pass_s=0.05, draft_s=0.001, rtt_s=0.001, acceptance=1.0)
    assert ad.choose_mode() == "spec"  # the model alone: speculation looks cheap
    for _ in range(10):
        ad.observe_interval(0.5, 2)   # but each round really takes 0.5 s for 2 tokens
    assert ad.choose_mode() == "cloud"


def test_probes_back_off_and_skip_hopeless_regimes():
    ad = AdaptiveController(probe_every=2)
    feed(ad, step_s=0.01, pass_s=0.012, draft_s=0.05, rtt_s=0.2, acceptance=0.5)
    assert ad.choose_mode() == "cloud"
    modes = [ad.start_response() for _ in range(12)]
    assert modes.count("spec") == 0, "speculation is over 2x slower here: probing it only wastes time"


def test_a_few_unlucky_rounds_do_not_drive_it_out_of_speculation_where_it_pays_but_a_hopeless_regime_does():
    """The Go2 regime at an acceptance of 0.3 (speculation about 20% faster than the cloud): three
    rounds that accept nothing, one time in ten, make it look 1.7 times slower; it stays and
    speculates on. H100-like timings (speculation 8 times slower) still leave after two rounds,
    and a regime left on a few unlucky rounds is probed again."""
    def rounds(ad, n, accepted, draft_s, rtt_s, pass_s):
        for _ in range(n):
            ad.observe_draft(draft_s * 4, 4)
            ad.observe_round(4, accepted, pass_s, 5, rtt_s)
            ad.observe_interval(draft_s * 4 + rtt_s + pass_s, accepted + 1)

    go2 = AdaptiveController()
    go2.observe_step(0.604)
    assert go2.start_response() == "spec"
    rounds(go2, 3, 0, 0.072, 0.12, 0.62)
    assert go2.choose_mode() == "spec", "three unlucky rounds are not evidence enough to leave"
    rounds(go2, 20, 0, 0.072, 0.12, 0.62)
    assert go2.choose_mode() == "cloud", "a draft that never lands is"

    h100 = AdaptiveController(probe_every=2)
    h100.observe_step(0.025)
    rounds(h100, 2, 2, 0.072, 0.12, 0.03)
    assert h100.choose_mode() == "cloud"
    assert [h100.start_response() for _ in range(12)].count("spec") == 0

    unlucky = AdaptiveController(probe_every=2)
    unlucky.observe_step(0.06)
    rounds(unlucky, 3, 0, 0.01, 0.04, 0.064)   # Nano-like: 144 ms for one token against 60 in the cloud
    assert unlucky.choose_mode() == "cloud"
    assert "spec" in [unlucky.start_response() for _ in range(4)], "three rounds cannot rule speculation out"


def test_a_draft_that_is_nearly_always_right_drafts_a_whole_answer_per_round():
    """Go2 timings, every drafted token accepted: the pass costs about the same for 17 tokens as
    for 5, so the draft length grows past 8 toward a whole action answer."""
    ad = AdaptiveController()
    feed(ad, step_s=0.604, pass_s=0.62, draft_s=0.072, rtt_s=0.120, acceptance=1.0)
    assert 8 < ad.best_gamma() <= 16
