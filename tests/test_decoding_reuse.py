"""Answers reused across frames (decoding/reuse.py): the lookup itself, and that drafting from recent
answers changes neither the greedy output (== the target alone) nor the sampled distribution."""
import numpy as np
import pytest

from decoding_fixtures import pair, random_image, target_alone
from test_decoding_sampling import TEMPERATURE, chi_square_pvalue, sampling_pair, target_joint
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import GREEDY_LOSSLESS, DecodeConfig
from spec_edge_cloud.decoding.reuse import AnswerMemory, continuation
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads

SPECULATIVE = [m for m in GREEDY_LOSSLESS if m != "cloud"]
PROMPT = (1, 2, 3)


# -- the lookup ------------------------------------------------------------------------------------
def test_continuation_is_what_follows_the_longest_matching_suffix():
    answer = [5, 6, 7, 8, 6, 7, 9, 10]
    assert continuation(answer, []) == (0, answer)                 # nothing yet: the whole answer
    assert continuation(answer, [1, 8, 6, 7]) == (3, [9, 10])       # "8 6 7" beats "6 7" at the start
    assert continuation(answer, [5, 6]) == (2, [7, 8, 6, 7, 9, 10])
    assert continuation(answer, [11, 12]) == (0, [])                # no match
    assert continuation(answer, [9, 10]) == (0, [])                 # matches only at the end: nothing follows


def test_among_equal_matches_the_one_at_the_same_position_wins():
    answer = [4, 1, 2, 3, 4, 1, 2, 9]
    assert continuation(answer, [7, 7, 7, 7, 4, 1]) == (2, [2, 9])  # position 4, as in the answer
    assert continuation(answer, [7, 7, 7, 4, 1]) == (2, [2, 3, 4, 1, 2, 9])  # else the first occurrence


def test_memory_proposes_from_the_best_recent_answer_of_the_same_prompt():
    memory = AnswerMemory(answers=2)
    memory.remember(PROMPT, [10, 11, 12, 13], None)
    memory.remember(PROMPT, [10, 11, 20, 21, 22], None)
    memory.remember((9,), [10, 11, 12, 13, 14], None)
    assert memory.propose(PROMPT, [], 16, None) == [10, 11, 20, 21, 22]   # the newest, from its start
    assert memory.propose(PROMPT, [10, 11, 12], 16, None) == [13]          # the older matches longer
    assert memory.propose(PROMPT, [7, 8], 16, None) == []                  # no answer continues it
    assert memory.propose((4,), [], 16, None) == []                        # another prompt: nothing
    assert memory.propose(PROMPT, [10, 11, 20], 2, None) == [21, 22]       # at most `limit`


def test_one_matching_token_is_too_little_once_two_are_there():
    memory = AnswerMemory()
    memory.remember(PROMPT, [1, 5, 6, 7], None)
    assert memory.propose(PROMPT, [5], 16, None) == [6, 7]
    assert memory.propose(PROMPT, [9, 5], 16, None) == []
    assert memory.propose(PROMPT, [9, 1, 5], 16, None, min_match=3) == []    # the client: drafted + 1
    assert memory.propose(PROMPT, [1, 5], 16, None, min_match=3) == [6, 7]   # all there is matches


def test_a_proposal_cut_by_its_limit_ends_at_a_sentence_end():
    memory = AnswerMemory()
    memory.remember(PROMPT, [1, 2, 0, 3, 4, 0, 5, 6], None)   # 0 ends a sentence
    end = (lambda t: t == 0)
    assert memory.propose(PROMPT, [], 7, None, end) == [1, 2, 0, 3, 4, 0]
    assert memory.propose(PROMPT, [], 2, None, end) == [1, 2]          # no sentence end inside: as cut
    assert memory.propose(PROMPT, [], 8, None, end) == [1, 2, 0, 3, 4, 0, 5, 6]  # not cut: all of it


def test_an_answer_sampled_with_the_responses_seed_is_never_proposed():
    """Its tokens were drawn with the uniforms the verifier will use again: not independent of them."""
    memory = AnswerMemory()
    memory.remember(PROMPT, [1, 2, 3], 7)
    assert memory.propose(PROMPT, [], 16, 7) == []
    assert memory.propose(PROMPT, [], 16, 8) == [1, 2, 3]
    assert memory.propose(PROMPT, [], 16, None) == [1, 2, 3]  # greedy decoding draws no uniforms


def test_memory_keeps_the_newest_answers_and_prompts():
    memory = AnswerMemory(answers=2, prompts=2)
    for tokens in ([1, 1], [2, 2], [3, 3], [2, 2]):
        memory.remember(PROMPT, tokens, None)
    memory.remember((8,), [4, 4], None)
    assert memory.propose(PROMPT, [], 16, None) == [2, 2]
    assert memory.propose(PROMPT, [3], 16, None) == [3]               # [3, 3] is still there; [1, 1] is not
    assert memory.propose(PROMPT, [1], 16, None) == []
    memory.remember((9,), [5, 5], None)                               # a third prompt: the oldest goes
    assert memory.propose(PROMPT, [], 16, None) == []
    with pytest.raises(ValueError):
        AnswerMemory(answers=0)


# -- lossless ----------------------------------------------------------------------------------------
def generate(target, draft, prompt, mode, memory, max_new, gamma=3, rtt=0.0, heads=(1, 2), **settings):
    engine = TargetEngine(target, ExitHeads(list(heads), target.hidden_size, 16))
    link = InProcessLink(VerifierService(engine), rtt_s=rtt)
    try:
        cfg = DecodeConfig(mode=mode, gamma=gamma, max_new_tokens=max_new, exit_threshold=0.0, reuse_answers=2,
                           **settings)
        return SpecClient(draft, link, cfg, memory=memory).generate(prompt)
    finally:
        link.close()


def near_misses(answer: list[int], vocab: int) -> list[list[int]]:
    """Recent answers that agree with `answer` in part: one word changed mid-way, the second half."""
    changed = list(answer)
    changed[len(answer) // 3] = (changed[len(answer) // 3] + 1) % vocab
    return [answer[len(answer) // 2:], changed]


@pytest.mark.parametrize("mode", SPECULATIVE)
@pytest.mark.parametrize("seed,gamma,limit", [(0, 1, 16), (1, 3, 5), (2, 4, 64)])
def test_greedy_output_equals_the_target_alone_when_drafting_from_near_miss_answers(mode, seed, gamma, limit):
    target, draft = pair("llama", seed, noise=0.1)   # a draft that agrees often: its rounds get extended
    prompt = target.encode(f"w{seed + 3} w11 w2")
    ref = target_alone(target, prompt, 24)
    memory = AnswerMemory(answers=2)
    for answer in near_misses(ref, 60):
        memory.remember(prompt.input_ids, answer, None)
    resp = generate(target, draft, prompt, mode, memory, 24, gamma=gamma, reuse_max_tokens=limit)
    assert resp.tokens == ref and resp.verified
    m = resp.metrics
    assert m.reused_rounds > 0, "no round was extended from a recent answer: the test lost its point"
    assert m.reused_accepted > 0 or m.switched_to_cloud_at is not None   # adaptive may leave speculation
    assert memory.propose(prompt.input_ids, [], 64, None) == ref   # the new answer is now the newest


@pytest.mark.parametrize("exit_layer", [4, 2])
def test_lossless_with_link_delay_and_predrafts_on_reused_answers(exit_layer):
    """Pre-drafts look up on the provisional tokens too; hits and misses must not change the output."""
    target, draft = pair("llama", 5, noise=0.1)
    prompt = target.encode("w3 w4 w5")
    ref = target_alone(target, prompt, 24)
    memory = AnswerMemory(answers=2)
    for answer in near_misses(ref, 60):
        memory.remember(prompt.input_ids, answer, None)
    resp = generate(target, draft, prompt, "spec-ee-pre", memory, 24, rtt=0.02, heads=(exit_layer,))
    assert resp.tokens == ref and resp.metrics.predrafts > 0 and resp.metrics.reused_rounds > 0


def test_a_robot_repeating_its_instruction_on_new_frames_gets_the_target_answer_each_time():
    """One client, one memory, the same text about three images: each answer the target's own, the
    later ones drafted (in part) from the earlier."""
    target, draft = pair("qwen", 3, noise=0.1)
    engine = TargetEngine(target, ExitHeads([1, 2], target.hidden_size, 16))
    link = InProcessLink(VerifierService(engine))
    try:
        client = SpecClient(draft, link, DecodeConfig(mode="spec-ee-pre", gamma=3, max_new_tokens=16,
                                                      exit_threshold=0.0, reuse_answers=2))
        frames = [target.encode("w4 w9 w1", random_image(i)) for i in (1, 1, 2)]
        responses = [client.generate(p) for p in frames]
    finally:
        link.close()
    for prompt, resp in zip(frames, responses):
        assert resp.tokens == target_alone(target, prompt, 16)
    assert responses[0].metrics.reused_rounds == 0
    same = responses[1].metrics   # the same frame again: the previous answer extends the drafts
    assert same.reused_accepted > 0 and same.rounds < responses[0].metrics.rounds


def test_reuse_is_auto_by_default_and_never_in_edge_or_cloud_mode():
    _, draft = pair("llama", 0)
    assert SpecClient(draft, None, DecodeConfig(mode="edge", reuse_answers=2)).memory is None
    # auto by default: on in adaptive (measured faster there), off in the paper's spec-ee-pre and the others
    assert DecodeConfig().answers_reused == 0 and DecodeConfig(mode="adaptive").answers_reused == 2
    assert DecodeConfig(mode="adaptive", reuse_answers=0).answers_reused == 0
    with pytest.raises(ValueError, match="reuse_max_tokens"):
        DecodeConfig(reuse_max_tokens=65)   # the wire carries at most 64 sampled draft rows


# -- sampling ----------------------------------------------------------------------------------------
class CountingMemory(AnswerMemory):
    proposals = 0

    def propose(self, *args, **kwargs):
        out = super().propose(*args, **kwargs)
        CountingMemory.proposals += bool(out)
        return out


def test_sampling_from_reused_answers_follows_the_target():
    """A reused answer is a point-mass draft distribution; speculative sampling stays exact."""
    target, draft, prompt = sampling_pair()
    joint = target_joint(target, prompt.input_ids)
    first, second = np.unravel_index(np.argsort(joint, axis=None)[-2:], joint.shape)  # two likely pairs

    def memory():
        m = CountingMemory(answers=2)
        m.remember(prompt.input_ids, [int(first[0]), int(second[0]), int(first[1])], None)
        m.remember(prompt.input_ids, [int(first[1]), int(second[1])], 10**6)   # sampled with another seed
        return m

    link = InProcessLink(VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 8))))
    CountingMemory.proposals = 0
    try:
        # one drafted token, one more from a recent answer that continues it
        pvalue = chi_square_pvalue(target, draft, prompt, link, "spec-ee-pre", memory=memory, gamma=1,
                                   reuse_answers=2)
    finally:
        link.close()
    assert CountingMemory.proposals >= 100, "reused answers were not proposed: the test lost its point"
    assert pvalue > 1e-3, f"temperature {TEMPERATURE}"


def test_the_draft_nodes_decoder_keeps_the_answers_across_its_per_response_clients():
    """The draft node builds a SpecClient per answer (its settings may change between answers): the
    recent answers live in its RobotDecoder, so the second answer to an instruction reuses the first."""
    from spec_edge_cloud.ros.robot_decoder import RobotDecoder
    target, draft = pair("qwen", 3, noise=0.1)
    link = InProcessLink(VerifierService(TargetEngine(target, ExitHeads([1, 2], target.hidden_size, 16))))
    decoder = RobotDecoder(draft, link, "test")
    settings = dict(DecodeConfig.defaults(), gamma=3, max_new_tokens=12, reuse_answers=2)
    try:
        first, again = (decoder.generate("w4 w9 w1", random_image(1), settings, lambda *a: None) for _ in "12")
        off = decoder.generate("w4 w9 w1", random_image(1), dict(settings, reuse_answers=0), lambda *a: None)
    finally:
        decoder.close()
    assert first.tokens == again.tokens == off.tokens
    assert first.metrics.reused_rounds == 0 and again.metrics.reused_rounds > 0 and off.metrics.reused_rounds == 0
