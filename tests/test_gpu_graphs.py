"""CUDA graphs of the static-cache pass, one per segment between exits (decoding/graphs.py).

The graph tests need a CUDA device and skip without one; the CPU checks what a CPU can: the bucket
choice and the clear refusal of --compile on a CPU."""
import pytest
import torch

from decoding_fixtures import pair, random_image, target_alone
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.graphs import bucket_for
from spec_edge_cloud.decoding.static_cache import CacheConfig
from spec_edge_cloud.decoding.target import TargetEngine, VerifyRequest
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.tiny import tiny_bundle
from test_gpu_static import batched_rounds, every_greedy_mode

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: graphs not run")


def test_a_pass_runs_in_the_smallest_bucket_that_holds_it():
    assert bucket_for(1, 5) == (1, 8)
    assert bucket_for(3, 1) == (4, 1)
    assert bucket_for(16, 16) == (16, 16)
    assert bucket_for(65, 2) is None and bucket_for(1, 33) is None  # eager then


def test_compile_on_the_cpu_is_a_clear_error():
    target, _ = pair("llama", 0)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TargetEngine(target, ExitHeads([1, 2], target.hidden_size, 8), cache=CacheConfig("static", 2, 64, True))


def on_gpu(bundle):
    bundle.model.to("cuda", torch.bfloat16)
    return bundle


def engines(target, layers=(1, 2)):
    heads = ExitHeads(list(layers), target.hidden_size, 16)
    return {compiled: TargetEngine(target, heads, cache=CacheConfig("static", 4, 128, compiled))
            for compiled in (False, True)}


@cuda
@pytest.mark.parametrize("kind", ["llama", "qwen"])
def test_compiled_equals_eager_in_every_greedy_mode(kind):
    target, draft = pair(kind, 1)
    on_gpu(target), on_gpu(draft)
    prompt = target.encode("w4 w9 w1", random_image(1) if kind == "qwen" else None)
    eager, compiled = engines(target).values()
    assert every_greedy_mode(compiled, draft, prompt, 32) == every_greedy_mode(eager, draft, prompt, 32)
    assert compiled.graphs.captures >= 1


@cuda
def test_compiled_early_verdicts_carry_fan_out_alternatives_and_fan_out_stays_lossless():
    """The graph path's EARLYs carry the second choices fan-out drafts branches for, like the eager
    path's; decoding with branches on the compiled engine is the target's own output."""
    target, draft = pair("llama", 1)
    on_gpu(target), on_gpu(draft)
    prompt = target.encode("w4 w9 w1")
    eager, compiled = engines(target).values()
    seq = compiled.start(prompt)
    seq.prefill()
    seq.verify([])
    exits = compiled.verify([VerifyRequest(seq, [5, 6, 7, 8])])[0].exits
    assert exits and all(e.verdict.alternatives for e in exits)
    for mode in ("spec-ee-pre", "adaptive"):
        tokens = {}
        for name, eng in (("eager", eager), ("compiled", compiled)):
            link = InProcessLink(VerifierService(eng))
            try:
                resp = SpecClient(draft, link, DecodeConfig(mode=mode, gamma=4, max_new_tokens=32, exit_threshold=0.0,
                                                            predraft_branches=3)).generate(prompt)
            finally:
                link.close()
            assert resp.verified, (mode, name)
            tokens[name] = resp.tokens
        assert tokens["compiled"] == tokens["eager"] == target_alone(target, prompt, 32), mode


@cuda
def test_compiled_batched_rows_equal_eager_batched_rows():
    target, draft = pair("llama", 2)
    on_gpu(target), on_gpu(draft)
    prompts = [target.encode(t) for t in ["w3 w4", "w5 w6 w7 w8 w9", "w1"]]
    eager, compiled = engines(target).values()
    assert batched_rounds(compiled, target, draft, prompts, 16) == batched_rounds(eager, target, draft, prompts, 16)
    assert (4, 4) in compiled.graphs.buckets  # 3 rows of 1 + 3 tokens


@cuda
def test_the_first_early_verdict_leaves_before_half_the_pass():
    """A deep model (32 layers of width 1024) whose pass is GPU-bound; an exit after layer 2 is reported
    while the remaining 30 layers' graphs still run."""
    target = on_gpu(tiny_bundle("llama", vocab=200, layers=32, hidden=1024, max_positions=1024))
    eng = TargetEngine(target, ExitHeads([2], target.hidden_size, 16), cache=CacheConfig("static", 2, 512, True))
    seq = eng.start(target.encode("w3 w4 w5 " * 50))
    seq.prefill()
    for _ in range(3):  # capture, then warm
        seq.verify([5, 6, 7, 8])
    timings = []
    for _ in range(10):
        result = eng.verify([VerifyRequest(seq, [5, 6, 7, 8])])[0]
        timings.append(result.exits[0].at / result.seconds)
    assert sorted(timings)[len(timings) // 2] < 0.5, timings
