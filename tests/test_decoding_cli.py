"""`spec-edge-cloud decode` and `exits` on model directories, and clear errors on bad input."""
import json
import subprocess
import sys

import pytest

from decoding_fixtures import pair, target_alone
from spec_edge_cloud.cli import main
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.modeling.tiny import tiny_bundle


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    target, draft = pair("llama", 11, noise=0.15)
    target.save(root / "target")
    draft.save(root / "draft")
    tiny_bundle("llama", vocab=30, seed=2).save(root / "other_vocab")
    return root, target


def decode(capsys, *args):
    code = main(["decode", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("mode", ["cloud", "spec", "spec-ee-pre", "adaptive"])
def test_decode_json_equals_target_alone(model_dirs, capsys, mode):
    root, target = model_dirs
    code, out, err = decode(capsys, "--mode", mode, "--draft", str(root / "draft"), "--target", str(root / "target"),
                            "--prompt", "w4 w8 w15", "--max-new-tokens", "20", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens"] == target_alone(target, target.encode("w4 w8 w15"), 20)
    assert result["metrics"]["tokens"] == len(result["tokens"]) and result["verified"]


def test_decode_as_a_real_command_prints_text(model_dirs):
    root, target = model_dirs
    out = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "decode", "--mode", "spec-ee",
                          "--draft", str(root / "draft"), "--target", str(root / "target"),
                          "--prompt", "w4 w8 w15", "--max-new-tokens", "12"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ref = target_alone(target, target.encode("w4 w8 w15"), 12)
    assert out.stdout.strip() == target.decode(ref)


@pytest.mark.parametrize("args,message", [
    (["--prompt", "   "], "empty prompt"),
    (["--prompt", " ".join(["w1"] * 600)], "does not fit the context"),
    (["--prompt", "w1", "--gamma", "0"], "gamma must be in [1, inf]"),
    (["--prompt", "w1", "--draft", "/nonexistent/model"], "not found"),
    (["--prompt", "w1", "--mode", "cloud", "--target", "{other_vocab}"], "tokenizers differ"),
])
def test_decode_bad_input_gets_a_clear_error(model_dirs, capsys, args, message):
    root, _ = model_dirs
    args = [a.format(other_vocab=root / "other_vocab") for a in args]
    base = {"--draft": str(root / "draft"), "--target": str(root / "target")}
    for k, v in base.items():
        if k not in args:
            args += [k, v]
    code, _, err = decode(capsys, *args)
    assert code == 2 and message in err, err


def test_garbage_image_file_is_rejected(model_dirs, capsys, tmp_path):
    root, _ = model_dirs
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 this is not a jpeg")
    code, _, err = decode(capsys, "--draft", str(root / "draft"), "--target", str(root / "target"),
                          "--prompt", "w1", "--image", str(junk))
    assert code == 2 and "cannot read an image" in err


def test_config_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        DecodeConfig(mode="turbo")


@pytest.mark.parametrize("attend", ["", "1"])
def test_exits_train_then_report(model_dirs, capsys, tmp_path, attend):
    root, _ = model_dirs
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"w{i} w{i + 2} w{i + 5}" for i in range(1, 13)))
    out_dir = tmp_path / "exits"
    assert main(["exits", "train", "--target", str(root / "target"), "--prompts", str(prompts), "--layers", "1,2",
                 "--steps", "20", "--rank", "8", "--max-new-tokens", "8", "--exits", str(out_dir),
                 "--attend", attend]) == 0
    assert "held-out agreement" in capsys.readouterr().out
    assert main(["exits", "report", "--target", str(root / "target"), "--prompts", str(prompts),
                 "--exits", str(out_dir), "--max-new-tokens", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trained"] and set(report["agreement"]) == {"1", "2"}
    assert json.loads((out_dir / "exit_heads.json").read_text()).get("attend", []) == ([1] if attend else [])


def test_decode_against_a_running_verifier_over_zeromq(model_dirs, tmp_path):
    """`decode --endpoint`: the robot side in this process, the verifier in another, over real sockets."""
    from transport_fixtures import CliProcess

    root, target = model_dirs
    server = CliProcess(["verifier", "--target", str(root / "target"), "--bind", "tcp://127.0.0.1:0"],
                        tmp_path / "verifier.log")
    try:
        endpoint = server.wait_ready()
        out = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "decode", "--mode", "spec-ee-pre",
                              "--draft", str(root / "draft"), "--endpoint", endpoint, "--prompt", "w4 w8 w15",
                              "--max-new-tokens", "16", "--json"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr + server.tail()
        result = json.loads(out.stdout)
        assert result["tokens"] == target_alone(target, target.encode("w4 w8 w15"), 16) and result["verified"]
    finally:
        server.stop()


def test_decode_flags_are_derived_from_decode_config():
    """Every DecodeConfig field is a `decode` flag with the config's own default and validation."""
    from spec_edge_cloud.cli import build_parser
    parser = build_parser()
    args = parser.parse_args(["decode", "--prompt", "w1"])
    assert DecodeConfig.from_args(args) == DecodeConfig()
    args = parser.parse_args(["decode", "--prompt", "w1", "--exit-layers", "1,3", "--stop", "reached,.",
                              "--draft-min-confidence", "0.2", "--deadline-s", "2.5", "--max-new-tokens", "9"])
    cfg = DecodeConfig.from_args(args)
    assert (cfg.exit_layers, cfg.stop, cfg.draft_min_confidence, cfg.deadline_s, cfg.max_new_tokens) == \
        ((1, 3), ("reached", "."), 0.2, 2.5, 9)
    assert cfg.wire_exit_layers == [1, 3] and DecodeConfig(mode="spec").wire_exit_layers == []
    assert DecodeConfig().wire_exit_layers is None


@pytest.mark.parametrize("kwargs,message", [
    ({"exit_threshold": 1.5}, "exit_threshold must be in"),
    ({"draft_min_confidence": -0.1}, "draft_min_confidence must be in"),
    ({"deadline_s": 0}, "deadline_s must be in"),
    ({"max_new_tokens": 0}, "max_new_tokens must be in"),
    ({"draft_top_p": 0.0}, "draft_top_p must be above 0"),
])
def test_config_validates_each_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**kwargs)
