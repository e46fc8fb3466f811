"""The profile simulator: exact protocol timings in hand-checkable cases, determinism, sensitivity, fleet."""
import random

import pytest

from spec_edge_cloud.bench import predict
from spec_edge_cloud.bench.profile_sim import BernoulliRounds, Job, RecordedRounds, Round, SimRegime, simulate, \
    simulate_fleet
from spec_edge_cloud.decoding.timing import TimingProfile

D, P, T, V, R = 10.0, 30.0, 50.0, 60.0, 100.0   # ms: draft/token, target prefill, step, 5-token pass, RTT


def regime(jitter_ms=0.0, **kw):
    profile = TimingProfile("t", draft_per_token_ms=D, target_prefill_ms=P,
                            target_cum_layer_ms={1: [T / 2, T], 5: [V / 2, V]})
    return SimRegime("t", profile, R / 1000, jitter_ms / 1000, **kw)


def jobs(n=1, tokens=10, token_acceptance_prob=1.0, agreement=1.0, seed=0, first_action=None):
    rng = random.Random(seed)
    return [Job(tokens, BernoulliRounds(token_acceptance_prob, agreement, rng), first_action, frame=i)
            for i in range(n)]


def ttc_ms(mode, **kw):
    (rec,) = simulate(regime(), mode, jobs(**kw), gamma=4, max_new_tokens=10)
    return rec.ttc_s * 1000, rec


def test_cloud_decoding_pays_the_round_trip_once_then_a_step_per_token():
    t, rec = ttc_ms("cloud", first_action=3)
    assert t == pytest.approx(R + P + 10 * T)
    assert rec.ttfa_s * 1000 == pytest.approx(R + P + 3 * T)
    assert rec.target_compute_s * 1000 == pytest.approx(P + 10 * T)


def test_speculation_with_a_perfect_draft_costs_draft_rtt_and_one_pass_per_round():
    t, rec = ttc_ms("spec")
    assert t == pytest.approx(2 * (4 * D + R + V))        # two rounds of 4 accepted + 1
    assert rec.rounds == 2 and rec.accepted == 8 and rec.drafted == 8


def test_predraft_on_an_agreeing_early_verdict_is_verified_from_the_server_queue():
    # round 0: sent at 4D, verified R/2 + 4D .. + V, EARLY at half the pass reaches the robot R/2 later;
    # the pre-draft (4D) leaves then and round 1 runs the moment it arrives; its EARLY would finish
    # the response, so no third pre-draft.
    t, rec = ttc_ms("spec-ee-pre")
    early0 = 4 * D + R / 2 + V / 2 + R / 2
    assert t == pytest.approx(early0 + 4 * D + R / 2 + V + R / 2)
    assert rec.predrafts == 1 and rec.hits == 1
    assert t < ttc_ms("spec")[0]


def test_a_missed_predraft_costs_its_drafting_time_and_is_dropped_by_the_server():
    t, rec = ttc_ms("spec-ee-pre", agreement=0.0)
    assert rec.predrafts >= 1 and rec.hits == 0
    # the FINAL of round 0 arrives while the robot pre-drafts: it drafts again after that
    final0 = 4 * D + R + V
    assert t == pytest.approx(max(final0, 4 * D + R + V / 2 + 4 * D) + 4 * D + R + V)


def test_edge_mode_is_the_draft_alone():
    assert ttc_ms("edge")[0] == pytest.approx(10 * D)


def test_predictions_are_deterministic_per_seed():
    def run(seed):
        return [simulate(regime(jitter_ms=20), m, jobs(5, 24, 0.6, 0.7, seed), 4, 24, seed)
                for m in ("cloud", "spec-ee-pre", "adaptive")]
    assert run(3) == run(3)
    assert run(3) != run(4)
    a = predict.paper_comparison("go2-orin-a100", (0.575,), (0.5, 0.9), tokens=16, responses=4, seed=1)
    b = predict.paper_comparison("go2-orin-a100", (0.575,), (0.5, 0.9), tokens=16, responses=4, seed=1)
    assert a == b


def test_recorded_rounds_replay_in_order_and_adapt_to_another_draft_length():
    fallback = BernoulliRounds(1.0, 1.0, random.Random(0))
    rec = RecordedRounds([Round(4, 2, True, False), Round(4, 4, True, True)], fallback)
    assert rec.next(4) == Round(4, 2, True, False)
    assert rec.next(6).accepted == 6              # all 4 accepted, 2 more from the fallback (probability 1)
    assert rec.next(3).accepted == 3              # past the record: the fallback
    with pytest.raises(ValueError, match="probability"):
        BernoulliRounds(1.2, 0.5, random.Random(0))


def test_more_agreement_means_more_hits_and_lower_latency():
    def mean_ttc(agreement):
        recs = simulate(regime(), "spec-ee-pre", jobs(20, 32, 0.6, agreement, 2), 4, 32)
        return sum(r.ttc_s for r in recs), sum(r.hits for r in recs)
    (low, low_hits), (high, high_hits) = mean_ttc(0.1), mean_ttc(0.9)
    assert high < low and high_hits > low_hits


def test_batched_verification_shares_the_gpu_among_robots():
    reg = regime()
    make = lambda i: jobs(4, 16, 0.6, 0.7, i)  # noqa: E731
    one = simulate_fleet(reg, "spec-ee-pre", make, 1, 4, 16)
    eight = simulate_fleet(reg, "spec-ee-pre", make, 8, 4, 16)
    turns = simulate_fleet(reg, "spec-ee-pre", make, 8, 4, 16, batched=False)
    assert len(eight["records"]) == 32
    gpu = lambda out: out["gpu_busy_s"] / out["tokens"]  # noqa: E731
    ttc = lambda out: sum(r.ttc_s for r in out["records"]) / len(out["records"])  # noqa: E731
    assert gpu(eight) < 0.6 * gpu(one)
    assert ttc(eight) < 1.3 * ttc(one) < ttc(turns)   # one pass at a time: robots queue behind each other
    # cloud streams batch too, and a robot's prefill is not starved by another robot's stream
    streams = [simulate_fleet(reg, "cloud", make, n, 4, 16) for n in (1, 2)]
    assert gpu(streams[1]) < 0.75 * gpu(streams[0]) and len(streams[1]["records"]) == 8


def test_the_server_side_queue_saves_a_round_trip_on_every_hit_over_client_only_predrafting():
    profile = TimingProfile("slow", draft_per_token_ms=D, target_prefill_ms=P,
                            target_cum_layer_ms={1: [T / 2, T], 5: [300.0, 600.0]})
    reg = SimRegime("slow", profile, R / 1000)
    (queued,) = simulate(reg, "spec-ee-pre", jobs(), 4, 10)
    (client,) = simulate(reg, "spec-ee-pre", jobs(), 4, 10, server_queue=False)
    assert queued.hits == client.hits == 1
    # client-only: the pre-draft (ready long before) leaves when round 0's FINAL arrives, 4D + R + 600
    assert client.ttc_s * 1000 == pytest.approx(4 * D + 2 * (R + 600))
    assert (client.ttc_s - queued.ttc_s) * 1000 == pytest.approx(R)


def test_per_token_acceptance_probability_and_acceptance_are_told_apart():
    assert predict.acceptance_share(0.575, 4) == pytest.approx((0.575 + 0.575**2 + 0.575**3 + 0.575**4) / 4)
    assert predict.acceptance_share(1.0, 4) == 1.0 and predict.acceptance_share(0.0, 4) == 0.0
    assert predict.token_acceptance_prob(predict.acceptance_share(0.6, 4), 4) == pytest.approx(0.6, abs=1e-6)
    recs = simulate(regime(), "spec", jobs(40, 32, 0.575, 1.0, 5), 4, 32)
    share = sum(r.accepted for r in recs) / sum(r.drafted for r in recs)
    assert share == pytest.approx(predict.acceptance_share(0.575, 4), abs=0.05)   # not 0.575
    comp = predict.paper_comparison("go2-orin-a100", (0.575,), (0.7,), tokens=16, responses=4, seed=1)
    assert comp["grid"][0]["token_acceptance_prob"] == 0.575 and "acceptance" not in comp["grid"][0]
    assert comp["implied_acceptance"] == pytest.approx(predict.acceptance_share(
        comp["implied_token_acceptance_prob"], 4))


def test_bench_profile_report_names_the_per_token_probability_beside_the_acceptance(tmp_path, capsys):
    from spec_edge_cloud import cli
    assert cli.main(["bench", "profile", "--regime", "go2-orin-a100", "--token-acceptance-prob", "0.575",
                     "--agreement", "0.7", "--responses", "4", "--tokens", "16", "--fleet", "1",
                     "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| per-token acceptance probability | acceptance | tokens/round |" in report
    assert "Per-token acceptance probability 0.575 (acceptance 0.3" in report


def test_fan_out_branches_hit_where_the_exit_misses_when_the_final_is_far_enough_off():
    """A slow pass (the EARLY 300 ms before its FINAL, 100 ms round trip): after a plain round has
    shown the round trip, a second branch fits; the FINAL is always the exit's second choice."""
    profile = TimingProfile("slow", draft_per_token_ms=D, target_prefill_ms=P,
                            target_cum_layer_ms={1: [300.0, 600.0], 5: [300.0, 600.0]})
    slow = SimRegime("slow", profile, R / 1000)

    def run(branches):
        rng = random.Random(0)
        work = [Job(30, BernoulliRounds(1.0, 0.0, rng, alternatives=(1.0,)), frame=i) for i in range(3)]
        return simulate(slow, "spec-ee-pre", work, gamma=4, max_new_tokens=30, branches=branches)

    one, two = run(1), run(2)
    assert sum(r.hits for r in one) == 0 and all(not r.branches_sent.get("1") for r in one)
    assert sum(r.branch_hits.get("1", 0) for r in two) >= 10 and sum(r.branch_hits.get("0", 0) for r in two) == 0
    assert sum(r.ttc_s for r in two) < 0.9 * sum(r.ttc_s for r in one)   # each hit saves a draft and a round trip
    # one DRAFT of two branches a round instead of a missed pre-draft and a fresh DRAFT: fewer bytes up
    assert sum(r.bytes_up for r in two) < sum(r.bytes_up for r in one)


def test_a_recent_answers_tokens_extend_a_round_at_no_drafting_time():
    """A recorded round a recent answer extended by 4 tokens, all accepted: with the lookup on, 4
    drafted + 4 reused commit 9 tokens in one pass of 9 (no drafting time for the 4); off, the round
    is cut to its 4 drafted and the response needs a third round."""
    def run(lookup):
        rounds = RecordedRounds([Round(8, 8, reused=4), Round(4, 4)], BernoulliRounds(1.0, 1.0, random.Random(0)))
        (rec,) = simulate(regime(), "spec", [Job(14, rounds)], gamma=4, max_new_tokens=14,
                          decode={"reuse_answers": 2 if lookup else 0, "reuse_max_tokens": max(lookup, 1)})
        return rec
    on, off = run(4), run(0)
    assert (on.rounds, on.drafted, on.accepted, on.reused_rounds, on.reused_drafted, on.reused_accepted) == \
        (2, 12, 12, 1, 4, 4)
    assert (off.rounds, off.reused_rounds) == (3, 0)
    assert on.ttc_s == pytest.approx(2 * (4 * D + R) / 1000 + regime().pass_s(1.0, 9) + V / 1000)
    assert off.ttc_s == pytest.approx(3 * (4 * D + R + V) / 1000)
    assert on.bytes_up > 0 and on.target_compute_s < off.target_compute_s


def test_reuse_is_drawn_only_where_modelled_and_its_tokens_follow_the_drafted_ones():
    rec = RecordedRounds([Round(6, 5, reused=2), Round(4, 1)], BernoulliRounds(1.0, 1.0, random.Random(0)))
    assert (rec.lookup(8), rec.lookup(1), rec.lookup(8, ahead=1)) == (2, 1, 0)
    assert rec.next(4, 2) == Round(6, 5, reused=2)    # 4 drafted accepted, then 1 of the 2 reused
    assert rec.next(4, 0).accepted == 1               # a miss among the drafted: nothing reused counts
    model = BernoulliRounds(1.0, 1.0, random.Random(0), reuse=1.0, reuse_tokens=3, reuse_token_prob=1.0)
    assert model.lookup(8) == 3 and model.lookup(2) == 2 and model.next(4, 3) == Round(7, 7, reused=3)
    plain, drawn = random.Random(5), random.Random(5)
    assert BernoulliRounds(0.5, 0.5, plain).lookup(8) == 0 and plain.random() == drawn.random()


def test_a_replay_with_reused_answers_is_simulated_with_its_lookup_and_reuse_rate():
    trace = [{"drafted": 6, "accepted": 6, "early_layer": 2, "agreed": True, "reused": 2},
             {"drafted": 4, "accepted": 1, "early_layer": 2, "agreed": False, "reused": 0}]
    result = {"config": {"gamma": 4, "reuse_answers": 2, "reuse_max_tokens": 16}, "target_layers": 4,
              "records": [{"mode": "spec", "drafted": 10, "accepted": 7, "round_trace": trace, "tokens": 20,
                           "first_action_token": None, "frame": 0, "repeat": 0}]}
    (job,) = predict.jobs_from_replay(result, "spec")
    assert [r.reused for r in job.rounds.rounds] == [2, 0]
    fallback = job.rounds.fallback
    assert (fallback.reuse, fallback.reuse_tokens, fallback.reuse_token_prob) == (0.5, 2, pytest.approx(1.0))
    assert predict.decoding(result["config"])["reuse_answers"] == 2 and predict.decoding({})["reuse_answers"] == 0


def test_tokens_the_grammar_forces_take_no_drafting_time_where_the_grammar_is_used():
    """A recorded round of 4 whose last 2 the grammar forced: 2 draft steps with the grammar on (or
    auto in adaptive), 4 with it off; auto leaves spec-ee-pre drafting every token."""
    def run(mode, grammar):
        rounds = RecordedRounds([Round(4, 4, forced=2)] * 3, BernoulliRounds(1.0, 1.0, random.Random(0)))
        (rec,) = simulate(regime(), mode, [Job(15, rounds)], gamma=4, max_new_tokens=15,
                          decode={"draft_grammar": grammar})
        return rec
    on, off = run("spec", "on"), run("spec", "off")
    assert (on.grammar_forced, off.grammar_forced) == (6, 0)
    # rounds 1 and 2 save 2 draft steps each; round 0's DRAFT then waits on the cloud for the prefill
    assert off.ttc_s - on.ttc_s == pytest.approx((2 * 2 * D + (4 * D + R / 2) - (R / 2 + P)) / 1000)
    assert run("spec-ee-pre", "auto").grammar_forced == 0 and run("adaptive", "auto").grammar_forced > 0
    model = BernoulliRounds(1.0, 1.0, random.Random(0), forced=0.5)
    assert 0 < sum(model.forced(4) for _ in range(50)) < 200


def test_calibrated_adaptive_learns_from_the_recorded_exit_labels_and_trusts_what_they_earned():
    """Rounds whose layer-2 exit was right at 0.95 confidence every time: the simulated adaptive's
    calibration (the client's own) comes to trust it and pre-drafts on its EARLYs; without the
    labels it never trusts an exit, as before the labels were recorded, and pre-drafts on them only
    unshown (on the prior's hit rate), or not at all with unshown pre-drafts off."""
    def run(labelled, unshown=0.3):
        labels = ((2, False, 0.95),) if labelled else ()
        rounds = RecordedRounds([Round(4, 4, layer=2, confidence=0.95, labels=labels)] * 200,
                                BernoulliRounds(1.0, 1.0, random.Random(0)))
        return simulate(regime(), "adaptive", [Job(20, rounds, frame=i) for i in range(8)], gamma=4, max_new_tokens=20,
                        decode={"predraft_min_hit": unshown})
    learnt, blind, off = run(True), run(False), run(False, unshown=0.0)
    assert sum(r.predrafts for r in off) == 0 and sum(r.early_trusted for r in off) == 0
    assert sum(r.early_trusted for r in blind) == 0 and sum(r.predrafts_unshown for r in blind) > 0
    assert sum(r.predrafts for r in blind) == sum(r.predrafts_unshown for r in blind)
    assert sum(r.hits for r in learnt[4:]) > 0 and sum(r.early_trusted for r in learnt) > 0
    assert sum(r.exit_total.get("2", 0) for r in learnt) > 0


def test_bernoulli_rounds_with_a_replays_exit_confidences_let_the_calibrated_adaptive_trust_the_exit():
    """The sweep's synthetic rounds: with an exit's recorded confidences (sure when right, unsure
    when wrong) every round carries its label, and the calibrated adaptive learns to trust and
    pre-draft on the confident EARLYs; without, it never trusts one. The FINAL's label says
    whether the EARLY agreed, and the drawn confidence comes from the record of its kind."""
    record = {"target_layers": 8, "records": [{"round_trace": [
        {"labels": [[2, False, 0.6], [4, False, 0.97], [6, False, 0.99]]},
        {"labels": [[2, True, 0.5], [4, True, 0.35], [6, False, 0.9]]},
        {"labels": [[2, False, 0.7], [4, False, 0.92]]}]}]}
    conf = predict.exit_confidences(record, 0.5)
    assert (conf.layer, sorted(conf.right), conf.wrong) == (4, [0.92, 0.97], (0.35,))
    assert predict.exit_confidences({"target_layers": 8, "records": [{"round_trace": [{}]}]}, 0.5) is None
    with pytest.raises(ValueError, match="right and of wrong"):
        predict.ExitConfidences(4, (0.9,), ())
    rounds = BernoulliRounds(1.0, 0.8, random.Random(0), confidences=conf)
    drawn = [rounds.next(4) for _ in range(200)]
    assert all(r.labels == ((4, not r.agreed, r.confidence),) and r.layer == 4 for r in drawn)
    assert {r.confidence for r in drawn if r.agreed} == {0.92, 0.97}
    assert {r.confidence for r in drawn if not r.agreed} == {0.35}

    def run(confidences):
        work = [Job(20, BernoulliRounds(1.0, 0.8, random.Random(i), confidences=confidences), frame=i)
                for i in range(12)]
        return simulate(regime(), "adaptive", work, gamma=4, max_new_tokens=20, decode={"predraft_min_hit": 0.0})
    with_conf, without = run(conf), run(None)
    assert sum(r.early_trusted for r in without) == 0 and sum(r.predrafts for r in without) == 0
    assert sum(r.early_trusted for r in with_conf) > 0 and sum(r.hits for r in with_conf[4:]) > 0
    assert sum(r.early_trusted_missed for r in with_conf) == 0    # a 0.35 verdict is never trusted
