"""Device and precision: one resolver, flags on every command that loads a model, models and
everything a round touches on the resolved device; the host syncs a round needs, counted."""
import collections
import json

import pytest
import torch

from decoding_fixtures import pair, static_reference, target_alone
from spec_edge_cloud.cli import main
from spec_edge_cloud.decoding.draft import DraftEngine
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.modeling.bundle import load_bundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.placement import Placement, resolve_placement

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_auto_is_the_cpu_in_float32_without_a_gpu_and_names_are_checked():
    if not torch.cuda.is_available():
        assert resolve_placement("auto", "auto") == Placement("cpu", "float32")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_placement("cuda", "auto")
    assert resolve_placement("cpu", "bfloat16") == Placement("cpu", "bfloat16")
    assert resolve_placement(None, None) == resolve_placement("auto", "auto")
    for device, dtype in [("tpu", "auto"), ("cuda:x", "auto"), ("cpu", "int8"), ("cpu", "half ")]:
        with pytest.raises(ValueError, match="--d"):
            resolve_placement(device, dtype)


@no_cuda
def test_auto_is_the_gpu_in_bfloat16_where_there_is_one():
    assert resolve_placement("auto", "auto") == Placement("cuda:0", "bfloat16")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    target, draft = pair("llama", 11, noise=0.15)
    target.save(root / "target")
    draft.save(root / "draft")
    return root


def test_load_bundle_in_bfloat16_with_sdpa_attention(model_dirs):
    bundle = load_bundle(model_dirs / "target", resolve_placement("cpu", "bfloat16"))
    assert bundle.dtype == torch.bfloat16 and bundle.device.type == "cpu"
    assert bundle.model.config._attn_implementation == "sdpa"
    engine = TargetEngine(bundle, ExitHeads([1, 2], bundle.hidden_size, 8))
    assert {p.dtype for p in engine.heads.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_decode_takes_device_and_dtype(model_dirs, capsys, dtype):
    code = main(["decode", "--mode", "spec-ee", "--draft", str(model_dirs / "draft"), "--target",
                 str(model_dirs / "target"), "--prompt", "w3 w5", "--max-new-tokens", "6", "--json",
                 "--device", "cpu", "--dtype", dtype])
    out = capsys.readouterr()
    assert code == 0, out.err
    target = load_bundle(model_dirs / "target", resolve_placement("cpu", dtype))
    prompt = target.encode("w3 w5")
    # float32 on the CPU: the dynamic cache; bfloat16: the static cache, whose reference is generate()
    # over a static cache of the same length (tests/test_gpu_static.py says why)
    ref = target_alone(target, prompt, 6) if dtype == "float32" else static_reference(target, prompt, 6, 512)
    assert json.loads(out.out)["tokens"] == ref


def test_decode_on_a_missing_gpu_is_a_clear_error(model_dirs, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["decode", "--draft", str(model_dirs / "draft"), "--target", str(model_dirs / "target"),
                 "--prompt", "w3", "--device", "cuda:0"])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err


@pytest.fixture
def host_syncs(monkeypatch):
    """Counts every call that copies a tensor's value to Python (each one waits for the device)."""
    counts = collections.Counter()
    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **kw):
            counts[_name] += 1
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("rows", [1, 3])
def test_a_round_syncs_the_host_only_for_its_verdicts(host_syncs, rows):
    """A drafted token costs one sync (its id and probability together); a verification pass one per
    early verdict plus one for the final verdict per row: nothing else waits for the device."""
    target, draft = pair("llama", 0)
    engine = TargetEngine(target, ExitHeads([1, 2], target.hidden_size, 16))
    prompts = [target.encode(f"w{3 + r} w4 w5") for r in range(rows)]
    seqs = [engine.start(p) for p in prompts]
    drafts = []
    for seq, prompt in zip(seqs, prompts):
        seq.prefill()
        drafter = DraftEngine(draft)
        drafter.prefill(prompt)
        host_syncs.clear()
        drafts.append(drafter.draft(4).tokens)
        assert sum(host_syncs.values()) == len(drafts[-1])
    if rows > 1:  # a batched pass needs every row past its prompt: one plain round each first
        for seq in seqs:
            seq.verify([])
    from spec_edge_cloud.decoding.target import VerifyRequest
    host_syncs.clear()
    results = engine.verify([VerifyRequest(s, d) for s, d in zip(seqs, drafts)])
    assert all(r.rows == rows for r in results)
    assert sum(host_syncs.values()) == rows * (len(engine.heads.layers) + 1), dict(host_syncs)
