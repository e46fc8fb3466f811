"""benchmarks/gpu_profile.py on the CPU with 2-layer models: the JSON it writes has the schema the
profile simulator reads (the GPU run writes the same), and its passes leave the prefix cache as
they found it, so every timed pass sees the same prefix."""
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_profile.py"
PREFIXES, GAMMAS = (16, 40), (0, 1, 2, 3, 4, 6, 8)


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_profile") / "profile.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out),
           "--prefixes", ",".join(map(str, PREFIXES)), "--reps", "3", "--warmup", "1"]
    # One thread: 2-layer models gain nothing from more, and OpenMP spinning against a busy suite
    # on 2 cores can make each pass 10x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "total_ms [half-depth fraction]" in done.stdout
    return json.loads(out.read_text())


def test_header_records_what_was_measured(profile):
    assert profile["tiny"] is True and profile["device"].startswith("cpu")
    assert profile["torch"] == torch.__version__
    assert profile["dtype"] == "torch.float32" and profile["reps"] == 3
    assert set(profile["models"]) == {"llama-2-7b", "qwen2-vl-7b-lm"}
    assert profile["models"]["qwen2-vl-7b-lm"]["model_class"] == "Qwen2ForCausalLM"


def test_every_prefix_and_gamma_has_a_cumulative_layer_profile(profile):
    for name, model in profile["models"].items():
        assert model["layers"] == 2 and model["params"] > 0
        assert {(r["prefix"], r["gamma"]) for r in model["runs"]} == set(itertools.product(PREFIXES, GAMMAS))
        for run in model["runs"]:
            cum = run["cum_layer_ms"]
            assert run["tokens"] == run["gamma"] + 1
            assert len(cum) == model["layers"], (name, run)
            assert cum[0] > 0 and all(a < b for a, b in zip(cum, cum[1:])), (name, cum)
            assert run["total_ms_min"] <= run["total_ms"] <= run["total_ms_max"]
            assert run["total_ms"] >= cum[-1]
            assert 0 < run["head_ms"] < run["total_ms"]
            assert run["prefill_ms_min"] <= run["prefill_ms"] <= run["prefill_ms_max"] and run["prefill_ms"] > 0


def test_pass_restores_the_prefix_cache():
    gp = load_script()
    device = torch.device("cpu")
    model = gp.build_model("qwen2-vl-7b-lm", True, torch.float32, device)
    clock = gp.Clock(device)
    prefix = torch.randint(model.config.vocab_size, (1, 12))
    _, cache = gp.prefill(model, prefix, 1, clock, lambda: gp.DynamicCache(config=model.config))
    before = [layer.keys.clone() for layer in cache.layers]
    marks = gp.LayerMarks(model, clock)
    try:
        timing = gp.timed_pass(model, torch.randint(model.config.vocab_size, (1, 5)), cache, marks, clock)
    finally:
        marks.remove()
    assert cache.get_seq_length() == 12
    assert all(torch.equal(b, layer.keys) for b, layer in zip(before, cache.layers))
    assert len(timing.cum_layer_ms) == 2 and timing.head_ms > 0


def test_bad_arguments_are_refused():
    gp = load_script()
    with pytest.raises(SystemExit):
        gp.main(["--tiny", "--device", "cpu", "--out", "/dev/null", "--prefixes", "16,-4"])
    with pytest.raises(SystemExit):
        gp.main(["--tiny", "--device", "cpu", "--out", "/dev/null", "--shapes", "gpt-5"])
