"""Exit thresholds calibrated online (decoding/calibration.py): the bound, its choice on synthetic exits
of known quality, the protocol core acting only on trusted verdicts, and lossless decoding with it."""
from __future__ import annotations

import random
from statistics import NormalDist

import pytest

from decoding_fixtures import pair, profile_file, target_alone
from spec_edge_cloud.decoding.adaptive import AdaptiveController
from spec_edge_cloud.decoding.calibration import GRID, NO_VERDICTS, ExitCalibration, wilson_upper
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.metrics import ResponseMetrics
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.rounds import Commit, Draft, FixedPolicy, Rounds, Show, Verdict
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.timing import Pacer, TimingProfile
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads

Z90 = NormalDist().inv_cdf(0.9)


def test_wilson_upper_bound_values_and_coverage():
    assert wilson_upper(0, 0, Z90) == 1.0
    assert wilson_upper(0, 20, Z90) == pytest.approx(Z90 ** 2 / (20 + Z90 ** 2))
    assert wilson_upper(5, 50, Z90) == pytest.approx(0.1677, abs=1e-3)   # by hand: p 0.1, n 50, z 1.2816
    assert wilson_upper(5, 50, Z90) > wilson_upper(10, 100, Z90) > 0.1    # more evidence, tighter bound
    # coverage: the true rate lies below the 90% bound in about 90% of samples (Wilson is near-exact here)
    rng = random.Random(0)
    p, n = 0.1, 80
    covered = sum(wilson_upper(sum(rng.random() < p for _ in range(n)), n, Z90) >= p for _ in range(2000))
    assert 0.86 <= covered / 2000 <= 0.97


def miss_probability(kind: str, confidence: float) -> float:
    """Synthetic exits: 'graded' misses less the surer it is (0.3 (1 - c) among verdicts at c or
    above: under 0.1 from c = 2/3), 'useless' misses half its verdicts whatever its confidence, 'sharp'
    never misses at 0.9 or above and always below."""
    return {"graded": 0.6 * (1 - confidence), "useless": 0.5, "sharp": 0.0 if confidence >= 0.9 else 1.0}[kind]


def run_session(kinds: dict[int, str], rounds: int, seed: int, target: float = 0.1):
    """A session of `rounds` rounds, each exit of `kinds` sending one verdict at a uniform confidence;
    per exit, (trusted, missed-among-trusted) with the threshold in force when each verdict came."""
    rng = random.Random(seed)
    cal = ExitCalibration(target, 0.9)
    acted = {layer: [0, 0] for layer in kinds}
    for _ in range(rounds):
        for layer, kind in kinds.items():
            c = rng.random()
            missed = rng.random() < miss_probability(kind, c)
            if cal.trusts(layer, c):
                acted[layer][0] += 1
                acted[layer][1] += missed
            cal.observe(layer, c, missed)
    return cal, acted


def test_calibration_keeps_the_realised_miss_rate_below_its_target_on_exits_of_known_quality():
    cal, acted = run_session({2: "graded", 4: "useless", 6: "sharp"}, 3000, seed=1)
    trusted, missed = acted[2]
    assert trusted > 200 and missed / trusted <= 0.1               # acts on a fair share, below the target
    assert 2 / 3 <= cal.threshold(2) <= 0.8                         # where the miss rate truly crosses 0.1
    assert cal.bound(2) < 0.1
    assert acted[4] == [0, 0] and cal.threshold(4) is None and cal.bound(4) == 1.0   # never trusted
    assert cal.threshold(6) == 0.9 and acted[6][1] == 0 and acted[6][0] > 200          # the sharp edge, found


def test_a_chosen_threshold_misses_more_than_the_target_no_more_often_than_its_confidence_allows():
    """Over many short sessions, the threshold finally chosen for the graded exit has a true miss rate
    above the target (a grid threshold below 2/3) in at most about 10% of sessions (90% bound)."""
    sessions, wrong, chosen = 300, 0, 0
    for seed in range(sessions):
        cal, _ = run_session({2: "graded"}, 150, seed)
        t = cal.threshold(2)
        chosen += t is not None
        wrong += t is not None and t < 2 / 3
    assert chosen > sessions // 3                                   # the test has something to judge
    assert wrong / sessions <= 0.12


def test_thresholds_follow_the_window_when_an_exit_gets_worse():
    cal = ExitCalibration(0.1, 0.9, window=100)
    for _ in range(100):
        cal.observe(2, 0.97, False)
    assert cal.threshold(2) == 0.95
    for _ in range(100):
        cal.observe(2, 0.97, True)                                  # the same confidence, now always wrong
    assert cal.threshold(2) is None


def test_bad_settings_are_refused():
    for target, conf, window in ((0.0, 0.9, 10), (1.0, 0.9, 10), (0.1, 1.0, 10), (0.1, 0.9, 0)):
        with pytest.raises(ValueError):
            ExitCalibration(target, conf, window)
    with pytest.raises(ValueError, match="exit_miss_target"):
        DecodeConfig(exit_miss_target=1.0)
    assert GRID[0] > GRID[-1] == 0.0


def test_the_core_acts_only_on_trusted_verdicts_and_every_final_labels_its_earlies():
    ad = AdaptiveController.for_config(DecodeConfig(mode="adaptive", exit_miss_target=0.1, predraft_min_hit=0))
    assert ad.threshold == NO_VERDICTS               # no exit trusted yet: no EARLY asked for
    r = Rounds(ad, 200, ResponseMetrics("adaptive"))
    n = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    for i in range(ad.calibration.min_verdicts):
        v = Verdict(n, 2, 7)
        assert r.early(v, 0.1, False, layer=2, confidence=0.97) == []      # not calibrated yet: not acted on
        assert r.final(v, 0.2, 0.1, 5, [(2, 2, 7), (4, 0, 1)], [0.97, 0.4]) == [Commit(v)]  # the labels
        (nxt,) = r.committed(3 * (i + 1), done=False)
        n = r.drafted(nxt, 4, 0.04, 0.3).number
    assert ad.calibration.threshold(2) == 0.95 and ad.calibration.threshold(4) is None
    assert ad.threshold == 0.95                      # the cloud is asked for what may be acted on
    assert r.m.early_trusted == 0 and r.m.predrafts == 0
    v = Verdict(n, 3, 5)
    assert r.early(Verdict(n, 1, 1), 0.4, False, layer=2, confidence=0.6) == []   # below layer 2's threshold
    show, pre = r.early(v, 0.5, False, layer=2, confidence=0.99)
    assert show == Show(v) and pre == Draft(4, assumes=v)
    r.drafted(pre, 4, 0.04, 0.5)
    r.final(Verdict(n, 1, 9), 0.6, 0.1, 5)                                   # it missed
    assert (r.m.early_trusted, r.m.early_trusted_missed, r.m.early_miss_rate) == (1, 1, 1.0)


def test_an_untrusted_verdict_worth_a_predraft_gets_one_unshown_and_its_miss_shows_nothing():
    """Unshown pre-drafts (adaptive's `predraft_min_hit`): on an EARLY not trusted to be shown, a
    pre-draft without Show where the exit's estimated hit rate pays; what is shown (and bounded)
    stays the trusted verdicts alone; an exit that keeps missing loses its pre-drafts too."""
    ad = AdaptiveController.for_config(DecodeConfig(mode="adaptive", exit_miss_target=0.1, predraft_min_hit=0.3))
    assert ad.threshold == 0.0                       # nothing known (1/2 each): every EARLY worth asking for
    r = Rounds(ad, 200, ResponseMetrics("adaptive"))
    n = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    v = Verdict(n, 2, 7)
    (pre,) = r.early(v, 0.1, False, layer=2, confidence=0.6)   # not trusted: no Show, a pre-draft
    assert pre == Draft(4, assumes=v)
    r.drafted(pre, 4, 0.04, 0.15)
    assert r.early(Verdict(n, 2, 7), 0.12, False, layer=4, confidence=0.7) == []  # one pre-draft a round
    wrong = Verdict(n, 1, 9)
    assert r.final(wrong, 0.2, 0.1, 5, [(2, 2, 7), (4, 2, 7)], [0.6, 0.7]) == [Commit(wrong)]  # nothing to withdraw
    assert (r.m.predrafts, r.m.predrafts_unshown, r.m.early_trusted, r.m.early_miss_rate) == (1, 1, 0, None)
    for _ in range(8):                               # layer 2 keeps missing at that confidence
        ad.observe_exit(2, 0.6, True)
    assert ad.calibration.hit_rate(2, 0.6) < 0.3 and not ad.predrafts_on(2, 0.6)
    # layer 4, one miss at 0.7: below the floor there (4 x 1/3 + 0 of 1), above it where it has no labels
    assert not ad.predrafts_on(4, 0.7) and ad.predrafts_on(4, 0.9) and ad.threshold == 0.0
    for c in (0.3, 0.5, 0.7, 0.9, 0.99) * 2:
        ad.observe_exit(4, c, True)
    assert ad.threshold == NO_VERDICTS                # no exit worth an EARLY any more: none asked for
    # the break-even of the timings: a pre-draft of 4 x 0.1 s against a 0.2 s lead and a 0.1 s round trip
    # saves 0.2 s on a hit and delays the next round 0.2 s on a miss: worth it from a hit rate of 1/2
    ad.draft_token_s.value, ad.rtt_s.value, ad.early_lead_s.value, ad.gamma = 0.1, 0.1, 0.2, 4
    assert ad.predraft_min_hit() == pytest.approx(0.5)
    assert not AdaptiveController.for_config(DecodeConfig(mode="adaptive", predraft_min_hit=0)).predrafts_on(2, 1.0)


def test_a_fixed_policy_trusts_what_the_cloud_sends_as_before():
    policy = FixedPolicy(DecodeConfig(mode="spec-ee-pre", exit_threshold=0.5))
    assert policy.trusts(2, 0.5) and policy.trusts(None, 1.0) and not policy.trusts(2, 0.49)


def test_adaptive_with_calibrated_exits_is_lossless_and_predrafts_once_exits_are_trusted(tmp_path):
    """One controller across responses (a robot's session): its exits become trusted (the last
    layer's always agrees, and a loose target needs few labels), it pre-drafts on them, and every
    answer is the target's own. The target is paced slow, so that speculation pays and adaptive
    keeps it. Then a session whose bound no exit can meet (a 1% target): every pre-draft unshown,
    every answer the target's own."""
    target, draft = pair("llama", 8, noise=0.02, layers=8)
    profile = TimingProfile.load(profile_file(tmp_path))
    engine = TargetEngine(target, ExitHeads([4, 8], target.hidden_size, 16), Pacer(profile))

    def session(config: DecodeConfig, responses: int) -> tuple[AdaptiveController, ResponseMetrics]:
        ad, total = AdaptiveController.for_config(config), ResponseMetrics("adaptive")
        for i in range(responses):
            prompt = target.encode(f"w{i + 2} w5 w{i + 9}")
            link = InProcessLink(VerifierService(engine))
            try:
                resp = SpecClient(draft, link, config, adaptive=ad, pacer=Pacer(profile)).generate(prompt)
            finally:
                link.close()
            assert resp.tokens == target_alone(target, prompt, 16) and resp.verified
            for key in ("early_trusted", "predrafts", "predrafts_unshown"):
                setattr(total, key, getattr(total, key) + getattr(resp.metrics, key))
        return ad, total

    ad, m = session(DecodeConfig(mode="adaptive", max_new_tokens=16, exit_miss_target=0.3), 3)
    assert m.early_trusted > 0 and m.predrafts > 0
    _, m = session(DecodeConfig(mode="adaptive", max_new_tokens=16, exit_miss_target=0.01, predraft_min_hit=0.05), 2)
    assert m.early_trusted == 0 and m.predrafts == m.predrafts_unshown > 0
    assert ad.calibration.threshold(8) is not None
