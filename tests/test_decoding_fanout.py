"""Fan-out pre-drafting (issue 17): on an EARLY the robot drafts for the exit's verdict and its likely
alternatives, sends them as one DRAFT of branches, and the cloud verifies the one branch its FINAL
matches. The core by hand, the exit's alternatives, the cloud's choice of branch, the wire, and
the whole client with real tiny models: greedy output stays the target's, sampling stays exact."""
from __future__ import annotations

import pytest
import torch

from decoding_fixtures import pair, target_alone
from spec_edge_cloud.decoding.adaptive import AdaptiveController
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.messages import Branch, DraftRequest, Early, Final, Start
from spec_edge_cloud.decoding.metrics import ResponseMetrics
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.rounds import Commit, Draft, FinalDue, FixedPolicy, RollBack, Rounds, Show, Verdict
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.decoding.verify import verdict
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.transport import protocol
from test_decoding_sampling import TEMPERATURE, chi_square_pvalue


def known_due(lead_s: float = 60.0, rtt_s: float = 0.0) -> FinalDue:
    """FINALs known to come `lead_s` after their EARLYs: every branch fits in the time."""
    due = FinalDue()
    due.observe(lead_s, rtt_s)
    return due


def core(branches: int = 3, due: FinalDue | None = None) -> Rounds:
    config = DecodeConfig(mode="spec-ee-pre", gamma=4, max_new_tokens=20, predraft_branches=branches)
    return Rounds(FixedPolicy(config), 20, ResponseMetrics("spec-ee-pre"), branches=branches,
                  due=due or known_due())


def draft_all(r: Rounds, action: Draft) -> list[int]:
    """Draft an action and its further branches as the client does: their round numbers."""
    return [r.drafted(a, a.n, 0.01, 0.0, payload=[a.n] * a.n).number for a in (action, *action.also)]


# -- the core ----------------------------------------------------------------------------------------
def test_an_early_with_alternatives_asks_for_branches_that_share_one_round():
    r = core()
    r0 = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    v, second, shorter = Verdict(r0, 2, 7), Verdict(r0, 2, 8), Verdict(r0, 1, 9)
    show, pre = r.early(v, 1.0, finishes=False, alternatives=(second, v, shorter, Verdict(r0, 0, 3)))
    assert show == Show(v)
    assert pre.assumes == v and [a.assumes for a in pre.also] == [second, shorter]   # at most 3 in all, v once
    assert [pre.n] + [a.n for a in pre.also] == [4, 4, 4] and pre.until == pytest.approx(61.0)
    numbers = draft_all(r, pre)
    assert len(set(numbers)) == 1 and numbers[0] != r0
    assert [b.rank for b in r.pre] == [0, 1, 2]
    assert dict(r.m.branches_sent) == {0: 1, 1: 1, 2: 1} and r.m.predrafts == 1


def test_the_final_picks_the_branch_it_matches_and_a_miss_of_every_branch_drafts_afresh():
    r = core()
    r0 = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    v, second = Verdict(r0, 2, 7), Verdict(r0, 2, 8)
    _, pre = r.early(v, 1.0, False, alternatives=(second,))
    r1 = draft_all(r, pre)[0]
    # the final says the exit's second choice: what was shown goes, the rank-1 branch is under way
    assert r.final(second, 1.5, 0.1, 5) == [RollBack(), Commit(second)]
    assert r.committed(3, done=False) == [] and r.cur.number == r1 and r.cur.assumes == second
    # next round: neither branch holds, a fresh round
    _, pre = r.early(Verdict(r1, 4, 1), 2.0, False, alternatives=(Verdict(r1, 4, 2),))
    draft_all(r, pre)
    final = Verdict(r1, 0, 5)
    assert r.final(final, 2.5, 0.1, 5) == [RollBack(), Commit(final)]
    (fresh,) = r.committed(4, done=False)
    assert fresh == Draft(4)
    m = r.m
    assert (m.predrafts, m.hits) == (2, 1) and dict(m.branch_hits) == {1: 1}
    assert m.branch_hit_rate() == {0: 0.0, 1: 0.5}
    assert m.to_dict()["branch_hit_rate"] == {0: 0.0, 1: 0.5}


def test_branches_only_when_the_final_is_known_to_be_far_and_never_with_one_branch():
    r = core(due=FinalDue())                          # nothing learnt yet: no time known to be free
    r0 = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    _, pre = r.early(Verdict(r0, 2, 7), 1.0, False, alternatives=(Verdict(r0, 2, 8),))
    assert pre.also and pre.until is None             # the client drafts no further branch then
    r = core(branches=1)
    r0 = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    _, pre = r.early(Verdict(r0, 2, 7), 1.0, False, alternatives=(Verdict(r0, 2, 8),))
    assert pre == Draft(4, Verdict(r0, 2, 7))
    due = FinalDue()
    due.observe(0.5, 0.2)                             # FINAL 0.5 s after the EARLY, 0.2 s round trip
    assert due.until(10.0) == pytest.approx(10.3)


def test_the_round_trip_and_lead_come_from_the_rounds():
    due = FinalDue()
    r = core(due=due)
    r0 = r.drafted(r.start()[0], 4, 0.04, 0.0).number
    r.early(Verdict(r0, 4, 1), 0.2, True)
    r.final(Verdict(r0, 4, 1), 0.5, 0.1, 5)          # the first round: its wait says nothing of the link
    assert due.lead_s == pytest.approx(0.3) and due.rtt_s is None
    r.committed(5, False)
    r1 = r.drafted(Draft(4), 4, 0.04, 1.0).number
    r.early(Verdict(r1, 4, 1), 1.3, True)
    r.final(Verdict(r1, 4, 1), 1.5, 0.2, 5)
    assert due.rtt_s == pytest.approx(0.3) and due.lead_s == pytest.approx(0.3 + 0.3 * (0.2 - 0.3))


# -- the exit's alternatives -------------------------------------------------------------------------
def test_a_verdict_names_the_second_choice_and_the_best_token_after_one_accepted_fewer():
    logits = torch.full((4, 10), -5.0)
    for row, (first, second) in enumerate([(3, 6), (4, 8), (1, 2), (0, 9)]):
        logits[row, first], logits[row, second] = 5.0, 4.0
    v = verdict(logits, [3, 4, 7])                    # rows 0 and 1 agree with the draft, row 2 does not
    assert (v.accepted, v.next_token) == (2, 1)
    assert v.alternatives == ((2, 2), (1, 8))
    sampled = verdict(logits, [3, 4, 7], torch.full((3, 10), 0.1), temperature=1.0, seed=3)
    k, b = sampled.accepted, sampled.next_token
    assert sampled.alternatives[0][0] == k and sampled.alternatives[0][1] != b
    assert all(alt != (k, b) for alt in sampled.alternatives)


# -- the cloud ---------------------------------------------------------------------------------------
def test_the_cloud_verifies_the_branch_its_final_matches_and_commits_no_other():
    target, _ = pair("llama", 2)
    service = VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 16)))
    out: list = []
    prompt = target.encode("w3 w4 w5").input_ids
    base = len(prompt)

    def run(msg):
        service.submit("robot", "robot", msg, out.append)
        while service.run_once():
            pass

    run(Start("s", list(prompt)))
    run(DraftRequest("s", 0, base, [1, 2], alternatives=2))
    final = out[-1]
    assert isinstance(final, Final)
    earlies = [m for m in out if isinstance(m, Early)]
    assert earlies and all(len(e.alternatives) >= 1 for e in earlies)
    k, b = final.accepted, final.next_token
    after = base + k + 1
    wrong = (0, k, (b + 1) % 60)
    branches = [Branch(wrong, after, [11, 12]), Branch((0, k, b), after, [5, 6, 7])]
    run(DraftRequest("s", 1, after, [9], assumes=(0, max(0, k - 1), b + 2) if k else wrong, branches=branches))
    verified = out[-1]
    assert isinstance(verified, Final) and verified.round == 1 and verified.tokens_in_pass == 4   # [5, 6, 7]
    seq = service.sessions[("robot", "s")].seq.tokens
    assert seq[after:after + verified.accepted] == [5, 6, 7][:verified.accepted]
    # a pre-draft none of whose branches holds is dropped: no FINAL, nothing committed
    n, size = len(out), len(seq)
    last = (1, verified.accepted, verified.next_token)
    nope = [Branch((1, last[1], (last[2] + 1) % 60), len(seq), [3])]
    run(DraftRequest("s", 2, len(seq), [4], assumes=(1, last[1], (last[2] + 2) % 60), branches=nope))
    assert len(out) == n and len(service.sessions[("robot", "s")].seq.tokens) == size


def test_branches_cross_the_wire_and_are_checked_like_the_draft():
    msg = DraftRequest("s", 3, 10, [1, 2], torch.full((2, 5), 0.2), (2, 1, 4),
                       branches=[Branch((2, 1, 5), 10, [3], torch.full((1, 5), 0.2)), Branch((2, 0, 6), 9, [])],
                       alternatives=2)
    back = protocol.unpack(protocol.pack(msg, 0, b"12345678")).msg
    assert [(b.assumes, b.base, b.tokens) for b in back.branches] == [((2, 1, 5), 10, [3]), ((2, 0, 6), 9, [])]
    assert torch.equal(back.branches[0].probs, msg.branches[0].probs) and back.alternatives == 2
    assert [d.tokens for d in back.each_branch()] == [[1, 2], [3], []]
    chosen = back.chosen((2, 0, 6))
    assert (chosen.base, chosen.tokens, chosen.assumes, chosen.branches) == (9, [], None, [])
    assert back.chosen((2, 1, 7)) is None and DraftRequest("s", 0, 1, [2]).chosen(None).tokens == [2]
    early = Early("s", 3, 1, 2, 4, 0.9, [(2, 5), (1, 6)])
    assert protocol.unpack(protocol.pack(early, 0, b"12345678")).msg.alternatives == [(2, 5), (1, 6)]
    too_many = protocol.pack(DraftRequest("s", 0, 1, [1], assumes=(0, 0, 1),
                                          branches=[Branch((0, 0, i), 1, [1]) for i in range(9)]), 0, b"12345678")
    with pytest.raises(protocol.ProtocolError, match="branches"):
        protocol.unpack(too_many)


def test_the_server_refuses_a_bad_branch_or_branches_without_an_assumption():
    from spec_edge_cloud.transport.server import Limits, ServerConfig
    target, _ = pair("llama", 2)
    limits = Limits(TargetEngine(target), ServerConfig())
    limits.check(DraftRequest("s", 1, 4, [1], assumes=(0, 1, 2), branches=[Branch((0, 1, 3), 4, [2])]))
    with pytest.raises(protocol.ProtocolError, match="outside the vocabulary"):
        limits.check(DraftRequest("s", 1, 4, [1], assumes=(0, 1, 2), branches=[Branch((0, 1, 3), 4, [999])]))
    with pytest.raises(protocol.ProtocolError, match="probabilities of shape"):
        limits.check(DraftRequest("s", 1, 4, [1], assumes=(0, 1, 2),
                                  branches=[Branch((0, 1, 3), 4, [2], torch.full((2, 60), 0.1))]))
    with pytest.raises(protocol.ProtocolError, match="must assume"):
        limits.check(DraftRequest("s", 1, 4, [1], branches=[Branch((0, 1, 3), 4, [2])]))


# -- the whole client ---------------------------------------------------------------------------------
def fan_out(target, draft, prompt, mode, branches, layer, max_new=24, **settings):
    engine = TargetEngine(target, ExitHeads([layer], target.hidden_size, 16))
    link = InProcessLink(VerifierService(engine), rtt_s=0.02)
    try:
        cfg = DecodeConfig(mode=mode, gamma=3, max_new_tokens=max_new, exit_threshold=0.0,
                           predraft_branches=branches, **settings)
        adaptive = AdaptiveController(gamma=3, threshold=0.0)
        adaptive.LEAVE_SPEC_MARGIN = 0.0   # kept speculating: cloud decoding wins on these tiny models
        return SpecClient(draft, link, cfg, adaptive, due=known_due()).generate(prompt)
    finally:
        link.close()


@pytest.mark.parametrize("mode,branches", [("spec-ee-pre", 3), ("adaptive", 2)])
def test_greedy_output_with_fan_out_equals_the_target_alone(mode, branches):
    """Untrained exits at layers 1 and 2 of 4: their verdicts often miss, their alternatives hit."""
    further = hits = 0
    for seed, layer in ((0, 2), (1, 2), (2, 1)):
        target, draft = pair("llama", seed, noise=0.2)
        prompt = target.encode(f"w{seed + 3} w11 w2")
        resp = fan_out(target, draft, prompt, mode, branches, layer)
        assert resp.tokens == target_alone(target, prompt, 24) and resp.verified, (seed, layer)
        m = resp.metrics
        further += sum(n for rank, n in m.branches_sent.items() if rank > 0)
        hits += sum(n for rank, n in m.branch_hits.items() if rank > 0)
    assert further > 0, "no further branch was sent: the test lost its point"
    assert hits > 0, "no further branch was verified: the test lost its point"


def test_sampling_with_fan_out_follows_the_target():
    """Each branch is drafted from the prefix its verdict implies; whichever the FINAL picks, the
    pairs of tokens drawn follow the target's own distribution."""
    target, draft = pair("llama", 21, vocab=4, noise=4.0)   # sampling_pair's target, a draft that misses often
    prompt = target.encode("w1 w2")
    link = InProcessLink(VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 8))))
    seen: list[ResponseMetrics] = []
    try:
        pvalue = chi_square_pvalue(target, draft, prompt, link, "spec-ee-pre", gamma=1, due=known_due, seen=seen,
                                   predraft_branches=2)
    finally:
        link.close()
    second = sum(m.branch_hits[1] for m in seen)
    assert second >= 20, f"the second branch was verified {second} times: the test lost its point"
    assert pvalue > 1e-3, f"temperature {TEMPERATURE}"


def test_fan_out_is_off_by_default_and_bounded():
    assert DecodeConfig().predraft_branches == 1
    with pytest.raises(ValueError, match="predraft_branches"):
        DecodeConfig(predraft_branches=4)


def test_the_link_follows_the_branch_verified_and_resends_only_it():
    """The ZeroMQ link keeps each session's committed tokens (for a re-prefill elsewhere): a FINAL of a
    fan-out pre-draft commits the branch it matched; a held pre-draft goes again as that branch."""
    from spec_edge_cloud.transport.client import ZmqLink, _Pending

    p = _Pending(prompt=Start("s", [1, 2, 3]), committed=[1, 2, 3])
    p.sent[0] = DraftRequest("s", 0, 3, [7, 8])
    ZmqLink._commit(p, Final("s", 0, 1, 9, 0.1, 3))
    assert p.committed == [1, 2, 3, 7, 9] and p.last_final == (0, 1, 9)
    p.sent[1] = DraftRequest("s", 1, 5, [4, 4], assumes=(0, 1, 8), branches=[Branch((0, 1, 9), 5, [5, 6])])
    ZmqLink._commit(p, Final("s", 1, 2, 11, 0.1, 3))
    assert p.committed == [1, 2, 3, 7, 9, 5, 6, 11]

    class Frames(ZmqLink):   # the frames a resend puts on the socket, without one
        def __init__(self):
            self.wire, self.frames = protocol.WireOptions(), []

        def _send_frame(self, kind, body):
            self.frames.append((kind, body))

    p.sent[2] = DraftRequest("s", 2, 8, [3], assumes=(1, 2, 12), branches=[Branch((1, 2, 11), 8, [6, 6])])
    p.sent[3] = DraftRequest("s", 3, 8, [1], assumes=(1, 2, 13), branches=[Branch((1, 1, 2), 7, [6])])
    link = Frames()
    link._resend(p)
    kinds = [k for k, _ in link.frames]
    assert kinds == ["PREFILL", "DRAFT"] and 3 not in p.sent            # no branch of round 3 holds
    again = protocol.unpack(protocol.frame(*link.frames[1], 0, b"12345678")).msg
    assert (again.round, again.base, again.tokens, again.assumes, again.branches) == (2, 8, [6, 6], None, [])
