"""A weight-only quantized draft (torchao): every greedy mode still equals the target alone, and
`bench quantize` reports the acceptance each quantization keeps."""
import json
from pathlib import Path

import pytest
import torch

from decoding_fixtures import pair, target_alone
from spec_edge_cloud.cli import main
from spec_edge_cloud.modeling.quantize import quantize_weights
from test_gpu_static import engine, every_greedy_mode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode,kind", [("int8", "Int8Tensor"), ("int4", "IntxUnpackedToInt8Tensor")])
def test_a_quantized_draft_changes_acceptance_never_the_output(mode, kind):
    target, draft = pair("llama", 5, noise=0.1)
    before = draft.model(torch.tensor([[3, 4, 5]])).logits
    quantize_weights(draft.model, mode)
    assert type(draft.model.model.layers[0].mlp.up_proj.weight).__name__ == kind
    assert not torch.equal(draft.model(torch.tensor([[3, 4, 5]])).logits, before)
    prompt = target.encode("w3 w4 w5")
    ref = target_alone(target, prompt, 24)
    for m, tokens in every_greedy_mode(engine(target, "dynamic"), draft, prompt, 24).items():
        assert tokens == ref, m


def test_unknown_quantization_is_a_clear_error():
    with pytest.raises(ValueError, match="--quantize"):
        quantize_weights(torch.nn.Linear(4, 4), "int3")


def test_bench_quantize_on_the_shipped_pair(tmp_path, capsys):
    out = tmp_path / "q.json"
    code = main(["bench", "quantize", "--draft", str(ROOT / "models/draft"), "--target", str(ROOT / "models/target"),
                 "--bag", str(ROOT / "data/bags/sim_small"), "--frames", "2", "--max-new-tokens", "12", "--quantize", "none,int8",
                 "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"none", "int8"} and result["frames"] == 2
    for figures in result["modes"].values():
        assert 0 <= figures["acceptance"] <= 1 and figures["lossless_mismatches"] == []
    assert result["modes"]["none"]["acceptance_lost"] == 0
    assert "acceptance" in capsys.readouterr().out
