"""The robot's protocol core (decoding/rounds.py) driven by hand (events in, actions out, no models),
and the client that drives it with real models."""
from __future__ import annotations

import threading
import time

import pytest

from decoding_fixtures import pair, target_alone
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.messages import Final, Pong
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.decoding.adaptive import AdaptiveController
from spec_edge_cloud.decoding.metrics import ResponseMetrics
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.rounds import (Cloud, Commit, Draft, EdgeFinish, FixedPolicy, RollBack, Rounds, Send,
                                             Show, Verdict)


def core(mode: str = "spec-ee-pre", gamma: int = 4, max_new: int = 20, server_queue: bool = True,
         policy=None) -> Rounds:
    config = DecodeConfig(mode=mode, gamma=gamma, max_new_tokens=max_new)
    return Rounds(policy or FixedPolicy(config), max_new, ResponseMetrics(mode), server_queue)


def drafted(r: Rounds, action: Draft, at: float = 0.0) -> int:
    return r.drafted(action, action.n, 0.01 * action.n, at).number


def test_a_hit_goes_on_with_the_queued_predraft_and_a_miss_rolls_back_and_drafts_again():
    r = core()
    (first,) = r.start()
    assert first == Draft(4)
    r0 = drafted(r, first)
    early = Verdict(r0, 2, 7)
    show, pre = r.early(early, 0.1, finishes=False)
    assert show == Show(early) and pre == Draft(4, assumes=early, send=True)
    r1 = drafted(r, pre)
    assert r.early(early, 0.11, finishes=False) == [Show(early)]      # one pre-draft per round
    assert r.final(early, 0.2, 0.1, 5) == [Commit(early)]             # the final verdict agrees: a hit
    assert r.committed(3, done=False) == [] and r.cur.number == r1      # round r1 is already on its way
    miss_early, final = Verdict(r1, 4, 1), Verdict(r1, 1, 9)
    _, pre2 = r.early(miss_early, 0.3, finishes=False)
    assert pre2.n == 4 and pre2.assumes == miss_early
    drafted(r, pre2)
    assert r.final(final, 0.4, 0.1, 5) == [RollBack(), Commit(final)]
    assert r.committed(5, done=False) == [Draft(4)]
    m = r.m
    assert (m.rounds, m.drafted, m.accepted, m.predrafts, m.hits, m.early_messages) == (2, 8, 3, 2, 1, 3)
    assert m.gamma_used == [4, 4, 4]


def test_draft_length_is_cut_to_what_the_response_has_left_and_no_predraft_when_the_verdict_would_finish():
    r = core(max_new=6)
    r0 = drafted(r, r.start()[0])
    assert r.early(Verdict(r0, 4, 3), 0.1, finishes=True) == [Show(Verdict(r0, 4, 3))]
    assert r.final(Verdict(r0, 1, 3), 0.2, 0.1, 5) == [Commit(Verdict(r0, 1, 3))]
    (nxt,) = r.committed(2, done=False)
    assert nxt == Draft(4)                                            # 6 - 2 left: a full round
    r1 = drafted(r, nxt)
    _, pre = r.early(Verdict(r1, 2, 5), 0.3, finishes=False)
    assert pre == Draft(1, Verdict(r1, 2, 5))                         # 6 - 2 - (2 + 1) left after it
    drafted(r, pre)
    r.final(Verdict(r1, 2, 5), 0.4, 0.1, 5)
    assert r.committed(6, done=True) == []


def test_stale_and_foreign_rounds_are_ignored():
    r = core()
    r0 = drafted(r, r.start()[0])
    assert r.early(Verdict(r0 + 5, 1, 1), 0.1, False) == []
    assert r.final(Verdict(r0 + 5, 1, 1), 0.1, 0.1, 5) == []
    assert r.m.rounds == 0 and r.m.early_messages == 0


def test_plain_spec_never_predrafts_and_cloud_mode_starts_with_cloud_decoding():
    r = core("spec")
    r0 = drafted(r, r.start()[0])
    assert r.early(Verdict(r0, 2, 2), 0.1, False) == [Show(Verdict(r0, 2, 2))]
    assert core("cloud").start() == [Cloud()]
    assert Rounds.timeout() == [EdgeFinish("cloud deadline missed")]


def test_client_only_predrafting_holds_the_predraft_until_its_verdict_is_final():
    r = core(server_queue=False)
    r0 = drafted(r, r.start()[0])
    v = Verdict(r0, 3, 8)
    _, pre = r.early(v, 0.1, False)
    assert pre.send is False
    r1 = drafted(r, pre)
    r.final(v, 0.2, 0.1, 5)
    assert r.committed(4, done=False) == [Send(r1)]


def test_the_adaptive_policy_leaves_for_cloud_decoding_when_its_cost_model_says_so():
    ad = AdaptiveController(gamma=4)
    ad.observe_step(0.001)           # a cloud step far cheaper than any round seen below
    r = core("adaptive", policy=ad)
    t = 0.0
    for i in range(3):
        n = drafted(r, r.start()[0] if i == 0 else Draft(4), t)
        actions = r.final(Verdict(n, 0, 1), t + 1.0, 0.5, 5)
        assert actions == [Commit(Verdict(n, 0, 1))]
        t += 1.0
        nxt = r.committed(i + 1, done=False)
        if nxt == [Cloud()]:
            break
    assert nxt == [Cloud()] and r.m.switched_to_cloud_at == i + 1


class NoisyLink(InProcessLink):
    """Before every reply, something that changes nothing: a PONG, or a verdict for another session."""

    def recv(self, timeout: float):
        self._flip = not getattr(self, "_flip", False)
        if self._flip:
            return Pong(0.0) if self._count() % 2 else Final("someone-else", 0, 1, 2, 0.01, 5)
        return super().recv(timeout)

    def _count(self) -> int:
        self._n = getattr(self, "_n", 0) + 1
        return self._n


def test_the_client_waits_through_messages_that_change_nothing():
    """Over ZeroMQ, heartbeat answers and stale or foreign replies arrive between verdicts: the client
    must wait on through them, never end the response early."""
    target, draft = pair("llama", 3)
    prompt = draft.encode("w4 w9 w1")
    ref = target_alone(target, prompt, 16)
    for mode in ("spec", "spec-ee-pre", "cloud"):
        link = NoisyLink(VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 4))))
        try:
            config = DecodeConfig(mode=mode, max_new_tokens=16, exit_threshold=0.0)
            resp = SpecClient(draft, link, config).generate(prompt)
        finally:
            link.close()
        assert resp.tokens == ref and resp.verified, mode


def test_closing_an_inprocess_link_wakes_a_response_waiting_on_the_cloud():
    """A robot node that stops closes its link while a round waits on the cloud: the wait ends at
    once (as over ZeroMQ), not at the round's deadline, and nothing more can be sent."""
    target, draft = pair("llama", 3)
    link = InProcessLink(VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 4))), rtt_s=8.0)
    config = DecodeConfig(mode="spec-ee-pre", max_new_tokens=4, deadline_s=30.0)
    errors = []

    def respond() -> None:
        try:
            SpecClient(draft, link, config).generate(draft.encode("w4 w9 w1"))
        except RuntimeError as e:   # what the closed link says to the round that follows
            errors.append(str(e))
    worker = threading.Thread(target=respond)
    worker.start()
    time.sleep(0.5)   # the first message is still on its way up (4 s one way)
    start = time.monotonic()
    link.close()
    worker.join(5.0)
    assert not worker.is_alive() and time.monotonic() - start < 3.0
    assert errors == ["link is closed"]
    with pytest.raises(RuntimeError, match="closed"):
        link.send(Pong(0.0))
