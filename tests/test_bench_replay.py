"""Replay benchmark: the shipped bag through every mode over the real ZeroMQ bridge, and its report."""
import copy
import json

import pytest

from spec_edge_cloud.bench.replay import Replay, ReplayConfig, check_lossless
from spec_edge_cloud.bench.report import write_replay
from spec_edge_cloud.bench.stand_in import write_stand_in
from spec_edge_cloud.cli import main
from spec_edge_cloud.commands.bench import parse_link
from spec_edge_cloud.decoding.modes import MODES, DecodeConfig

BAG = "data/bags/sim_small"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_stand_in(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def bridge_run(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    cfg = ReplayConfig(BAG, *pair, frames=2, warmup=0, decode=DecodeConfig(max_new_tokens=12, exit_threshold=0.0),
                       link=parse_link("rtt=20ms,jitter=2ms,bandwidth=50mbit"), run_dir=out)
    result = Replay(cfg).run(progress=False)
    return result, write_replay(result, out)


def test_short_replay_over_the_bridge_produces_a_complete_report(bridge_run):
    result, files = bridge_run
    assert result["transport"].startswith("ZeroMQ") and not result["emulated"]
    assert len(result["records"]) == 2 * len(MODES)
    s = result["summary"]
    assert list(s) == list(MODES)
    assert s["cloud"]["speedup"] == pytest.approx(1.0)
    for mode in MODES:
        fig = s[mode]
        assert fig["ttc_s"]["median"] > 0 and fig["per_token_s"]["p90"] >= fig["per_token_s"]["median"] > 0
        assert fig["speedup"] > 0 and fig["ttc_over_bound"] > 0
    for mode in ("spec", "spec-ee", "spec-ee-pre"):
        assert 0 <= s[mode]["acceptance"] <= 1 and s[mode]["tokens_per_round"] >= 1
        assert s[mode]["cloud_s_per_token"] > 0 and s[mode]["bytes_up_per_token"] > 0
    assert set(s["spec-ee"]["exit_agreement"]) == {"3"} and s["spec"]["exit_agreement"] == {}
    assert s["spec-ee-pre"]["hit_rate"] is not None            # threshold 0: every round pre-drafts
    assert s["cloud"]["bytes_down_per_token"] > 0 and s["edge"]["bytes_up_per_token"] == 0
    for r in result["records"]:
        if r["mode"] in ("spec", "spec-ee", "spec-ee-pre"):
            assert len(r["round_trace"]) == r["rounds"]
            assert sum(x["accepted"] + 1 for x in r["round_trace"]) >= r["tokens"]
            assert r["timeline"]["drafts"] and r["timeline"]["passes"]
    md = files["markdown"].read_text()
    assert "**Regime: `native`**" in md and "timings NOT emulated" in md
    assert all(f"| {m} |" in md for m in MODES)
    assert files["latency_cdf"].stat().st_size > 10_000 and files["timeline"].stat().st_size > 10_000
    assert json.loads(files["json"].read_text())["summary"].keys() == s.keys()


def test_the_lossless_check_runs_inside_the_replay(bridge_run):
    result, files = bridge_run
    assert result["lossless"]["ok"] and result["lossless"]["responses"] == 2 * 4
    assert "every greedy mode returned exactly the cloud mode's tokens" in files["markdown"].read_text()
    tampered = copy.deepcopy(result["records"])
    victim = next(r for r in tampered if r["mode"] == "spec-ee-pre")
    victim["token_ids"] = victim["token_ids"][:-1] + [victim["token_ids"][-1] + 1]
    verdict = check_lossless(tampered)
    assert not verdict["ok"] and verdict["mismatches"] == [{"mode": "spec-ee-pre", "frame": victim["frame"],
                                                            "repeat": 0, "verified": True}]
    assert not check_lossless([r for r in tampered if r["mode"] != "cloud"])["checked"]


def test_bad_arguments_get_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="rtt=, jitter="):
        parse_link("delay=5ms")
    with pytest.raises(ValueError, match="unknown modes"):
        ReplayConfig(BAG, modes=["cloud", "fast"])
    assert main(["bench", "replay", BAG, "--draft", str(tmp_path / "none"), "--inprocess"]) == 2
    assert "--stand-in" in capsys.readouterr().err
    assert main(["bench", "replay", str(tmp_path), "--stand-in", str(tmp_path / "pair"), "--inprocess"]) == 2
    assert "not a rosbag2 directory" in capsys.readouterr().err


def test_a_final_answered_twice_is_one_round_of_the_timeline():
    from spec_edge_cloud.bench import timeline
    from spec_edge_cloud.decoding.messages import Final
    final = Final("s", 1, 2, 7, 0.01, 4)
    trace = [(0.0, "draft", {}), (0.01, "send", {"round": 1, "tokens": 3, "pre": False}),
             (0.05, "recv", {"msg": final}), (0.09, "recv", {"msg": final})]   # the retransmission's reply
    tl = timeline.build(trace, "s", 0.0, 0.01)
    assert len(tl["finals"]) == 1 and len(tl["passes"]) == 1
    assert timeline.rounds(tl) == [{"drafted": 3, "accepted": 2, "early_layer": None, "agreed": False,
                                     "alternative": None, "reused": 0, "forced": 0,
                                     "early_confidence": None, "labels": []}]


def test_a_round_records_which_alternative_of_its_early_the_final_was():
    """Fan-out: the simulator replays which branch a round's FINAL confirmed (bench/timeline.py)."""
    from spec_edge_cloud.bench import timeline
    from spec_edge_cloud.decoding.messages import Early, Final
    early = Early("s", 0, 2, 3, 9, 0.8, [(3, 5), (2, 6)])
    trace = [(0.0, "draft", {}), (0.01, "send", {"round": 0, "tokens": 4, "pre": False, "reused": 1}),
             (0.03, "recv", {"msg": early}),
             (0.05, "recv", {"msg": Final("s", 0, 2, 6, 0.01, 5, exits=[(2, 3, 9), (4, 2, 6)], exit_percent=[80, 97])})]
    (rnd,) = timeline.rounds(timeline.build(trace, "s", 0.0, 0.01))
    assert (rnd["agreed"], rnd["alternative"], rnd["early_layer"]) == (False, 2, 2)
    # what calibrates adaptive's exits in the simulator: the EARLY's confidence, each exit labelled by the FINAL
    assert rnd["early_confidence"] == 0.8 and rnd["labels"] == [[2, True, 0.8], [4, False, 0.97]]
    assert rnd["reused"] == 1        # reused answers: the tokens of its DRAFT a recent answer proposed


def test_a_text_only_pair_replays_text_prompts_losslessly(tmp_path, capsys):
    """The real-weights text pair has no camera: `texts` replace the bag's frames (no image, no action
    grammar); every greedy mode still returns the cloud mode's tokens."""
    from spec_edge_cloud.modeling.bundle import ModelBundle
    from spec_edge_cloud.modeling.layer_draft import cut_draft
    from spec_edge_cloud.modeling.tiny import tiny_bundle

    target = tiny_bundle("llama", vocab=40, layers=4, hidden=64, seed=3, logit_scale=4.0)
    target.save(tmp_path / "target")
    ModelBundle(cut_draft(target.model, keep=1), target.tokenizer).save(tmp_path / "draft")
    cfg = ReplayConfig(None, tmp_path / "draft", tmp_path / "target", modes=["cloud", "spec", "spec-ee-pre"],
                       warmup=0, decode=DecodeConfig(max_new_tokens=8, exit_threshold=0.0), inprocess=True,
                       run_dir=tmp_path, texts=["w1 w2 w3", "w7 w8"])
    result = Replay(cfg).run(progress=False)
    assert result["frames"] == 2 and result["lossless"]["ok"] and result["lossless"]["responses"] == 4
    assert 0 <= result["summary"]["spec-ee-pre"]["acceptance"] <= 1
    assert "2 held-out text prompts" in write_replay(result, tmp_path / "report")["markdown"].read_text()
    with pytest.raises(ValueError, match="not both or neither"):
        ReplayConfig(BAG, texts=["w1"])
    assert main(["bench", "replay", "--draft", str(tmp_path / "draft"), "--inprocess"]) == 2
    assert "not both or neither" in capsys.readouterr().err
    assert main(["bench", "replay", "--text-prompts", "0", "--inprocess"]) == 2
    assert "--text-prompts must be >= 1" in capsys.readouterr().err
