"""`spec-edge-cloud bench gpu` on the CPU with the tiny shape: the engine's own passes timed in two
precisions side by side, and a timing profile that --target-profile loads."""
import json

import pytest

from spec_edge_cloud.cli import main
from spec_edge_cloud.decoding.timing import Pacer, TimingProfile


def test_bench_gpu_tiny_shape_writes_results_and_a_loadable_profile(tmp_path, capsys):
    out, profile = tmp_path / "gpu.json", tmp_path / "profile.json"
    code = main(["bench", "gpu", "--shape", "tiny", "--draft-lengths", "0,3", "--rows", "1,2", "--device", "cpu",
                 "--dtype", "float32,bfloat16", "--prefix", "32", "--reps", "3", "--warmup", "1", "--json", str(out),
                 "--profile-out", str(profile)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "float32    eager" in printed and "bfloat16    eager" in printed
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert {(r["dtype"], r["rows"], r["gamma"]) for r in runs} == {
        (d, n, g) for d in ("float32", "bfloat16") for n in (1, 2) for g in (0, 3)}
    for r in runs:
        assert r["compiled"] is False and r["tokens"] == r["gamma"] + 1
        assert 0 < r["pass_ms_min"] <= r["pass_ms"] <= r["pass_ms_max"]
        assert set(r["early_ms"]) == {"1"}  # tiny: 2 layers, one exit at half depth
        assert 0 < r["early_ms"]["1"] < r["pass_ms_max"]
        assert r["bound_ms"] > 0 and r["bound_ratio"] == pytest.approx(r["pass_ms"] / r["bound_ms"], rel=1e-2)
    loaded = TimingProfile.load(profile)
    assert sorted(loaded.target_cum_layer_ms) == [1, 4]
    assert "MEASURED" in loaded.description and "float32" in loaded.description
    pacer = Pacer(loaded, num_layers=2)
    assert 0 < loaded.target_ms(0.5, 4) < loaded.target_ms(1.0, 4)
    assert pacer.profile is loaded


@pytest.mark.parametrize("args,message", [
    (["--shape", "gpt-5"], "unknown --shape"),
    (["--shape", "tiny", "--compile", "on", "--device", "cpu"], "needs a CUDA device"),
    (["--shape", "tiny", "--device", "cpu", "--prefix", "4000"], "do not fit"),
])
def test_bench_gpu_bad_input_is_a_clear_error(args, message, capsys):
    assert main(["bench", "gpu", *args, "--reps", "1"]) == 2
    assert message in capsys.readouterr().err
