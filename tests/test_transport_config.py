"""Start-up checks of the cloud side: parameters, key files, model and bag files, and a serving thread
that dies. Each case is a failure seen by an adversarial user (issue 19): it must end in one clear
error (no traceback) or a non-zero exit, never in a half-working process."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spec_edge_cloud.commands.up import parse_sets
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.modeling.bundle import ModelDirError, load_bundle
from spec_edge_cloud.modeling.tiny import tiny_bundle
from spec_edge_cloud.transport import security
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("params,words", [
    ({"insecure": "false"}, "insecure must be a bool"),
    ({"idle_timeout_s": "120"}, "idle_timeout_s must be a float"),
    ({"max_sessions_per_client": 0}, "max_sessions_per_client = 0 is outside 1.."),
    ({"max_frame_bytes": -1}, "max_frame_bytes = -1 is outside"),
    ({"max_sessions": 4.0}, "max_sessions must be an int"),
    ({"log_rounds": 1}, "log_rounds must be a bool"),
    ({"idle_timeout_s": float("nan")}, "idle_timeout_s must be a float"),
])
def test_every_server_parameter_is_typed_and_range_checked(params, words):
    with pytest.raises(ValueError, match=words):
        ServerConfig.from_params(params)


def test_all_bad_parameters_are_named_in_one_error():
    with pytest.raises(ValueError) as err:
        ServerConfig.from_params({"insecure": "false", "max_batch": 0, "bind": 5})
    assert all(name in str(err.value) for name in ("insecure", "max_batch", "bind"))
    assert ServerConfig.from_params({"idle_timeout_s": 120, "max_sessions": 3}).idle_timeout_s == 120


def test_a_quoted_boolean_in_the_config_file_is_refused_before_anything_binds(tmp_path):
    """`insecure: "false"` once bound 0.0.0.0 in plaintext (a non-empty string is true)."""
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text("verifier_node:\n  ros__parameters:\n    target_dir: models/target\n"
                   "    bind: tcp://0.0.0.0:0\n    insecure: \"false\"\n")
    out = cli("verifier", "--config", str(cfg))
    assert out.returncode == 2 and "insecure must be a bool" in out.stderr, out.stderr
    assert "ready" not in out.stdout and "Traceback" not in out.stderr
    cfg.write_text("verifier_node:\n  ros__parameters:\n    target_dir: [models/target\n")
    out = cli("verifier", "--config", str(cfg))
    assert out.returncode == 2 and "not valid YAML" in out.stderr and "Traceback" not in out.stderr


def test_insecure_warns_at_start():
    out = cli("verifier", "--insecure", "--target", "/nonexistent/target")
    assert "WARNING: insecure" in out.stderr and out.returncode == 2, out.stderr


def test_a_dead_serving_thread_ends_the_server():
    """The serving thread failing (here: its scheduler raising) is recorded and announced, so the
    process that runs the server exits non-zero instead of staying up and deaf."""
    engine = TargetEngine(tiny_bundle("llama", seed=1, layers=2))
    server = VerifierServer(engine, ServerConfig(bind="tcp://127.0.0.1:0", log_rounds=False))
    server.start()
    try:
        assert not server.stopped.wait(0.3) and server.failure is None

        def broken() -> bool:
            raise RuntimeError("injected fault")
        server.scheduler.run_once = broken
        assert server.stopped.wait(5), "the serving thread's death went unnoticed"
        assert isinstance(server.failure, RuntimeError)
    finally:
        server.stop()


def test_the_verifier_command_exits_non_zero_when_its_thread_dies(tmp_path, monkeypatch):
    from spec_edge_cloud.cli import build_parser
    from spec_edge_cloud.transport import server as server_module
    tiny_bundle("llama", seed=1, layers=2).save(tmp_path / "t")

    def dying_loop(self) -> None:
        time.sleep(0.2)
        raise RuntimeError("injected fault")
    monkeypatch.setattr(server_module.VerifierServer, "_loop", dying_loop)
    args = build_parser().parse_args(["verifier", "--target", str(tmp_path / "t"), "--bind", "tcp://127.0.0.1:0",
                                      "--log-level", "WARNING"])
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(args._run(args)))
    import signal
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # signal handlers belong to the main thread
    runner.start()
    runner.join(60)
    assert result == [1], "the command must end, with exit status 1"


# -- key files ------------------------------------------------------------------------------------
def test_secret_keys_are_never_readable_by_others_not_even_for_an_instant(tmp_path):
    """A watcher stats every secret file the moment it appears: created 0600, never 0644 then chmod-ed."""
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in os.scandir(tmp_path):
                if entry.name.endswith(".key_secret"):
                    try:
                        seen.append(entry.stat().st_mode)
                    except FileNotFoundError:
                        pass
    old = os.umask(0o022)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(150):
            security.generate(tmp_path, f"robot{i}")
    finally:
        stop.set()
        watcher.join()
        os.umask(old)
    assert seen, "the watcher saw nothing"
    assert not [m for m in seen if m & 0o077], "a secret key was readable by others"
    assert all(stat.S_IMODE((tmp_path / f"robot{i}.key_secret").stat().st_mode) == 0o600 for i in range(150))
    public, secret = security.load_pair(tmp_path / "robot0.key_secret")
    assert security.load_public(tmp_path / "robot0.key") == public and len(secret) == 40
    security.generate(tmp_path, "robot0", force=True)
    assert security.load_public(tmp_path / "robot0.key") != public


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "/etc/x", "", "x" * 65])
def test_key_names_that_leave_the_directory_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="key name"):
        security.generate(tmp_path / "keys", name)
    assert not (tmp_path / "x.key_secret").exists() and not (tmp_path / "x.key").exists()


def test_keys_command_refuses_a_path_as_a_name(tmp_path):
    out = cli("keys", "../escaped", "--dir", str(tmp_path / "keys"))
    assert out.returncode == 2 and "key name" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "escaped.key_secret").exists()


# -- model, bag and --set errors ------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "m"
    tiny_bundle("llama", seed=2, layers=2).save(d)
    return d


def test_corrupt_or_truncated_weights_are_a_clear_error(model_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelDirError, match="corrupt or truncated"):
        load_bundle(bad)
    out = cli("verifier", "--target", str(bad))
    assert out.returncode == 2 and "corrupt or truncated" in out.stderr and "Traceback" not in out.stderr


def test_a_missing_tokenizer_says_so(model_dir, tmp_path):
    import shutil
    bad = tmp_path / "notok"
    shutil.copytree(model_dir, bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError, match="no tokenizer.json") as err:
        load_bundle(bad)
    assert "sentencepiece" not in str(err.value)


def test_a_corrupt_bag_is_a_clear_error(tmp_path):
    import shutil
    from spec_edge_cloud.bench.bags import BagError, read_frames
    bag = tmp_path / "bag"
    shutil.copytree(ROOT / "data" / "bags" / "sim_small", bag)
    mcap = next(bag.glob("*.mcap"))
    for data in (mcap.read_bytes()[:3000], b"garbage"):
        mcap.write_bytes(data)
        with pytest.raises(BagError, match="could not be read"):
            read_frames(bag)


def test_bad_set_values_are_a_clear_error():
    assert parse_sets(["mode=cloud", "n=5"]) == {"mode": "cloud", "n": 5}
    for bad in ("mode=[", "x={a: 1", "noequals"):
        with pytest.raises(ValueError, match="--set"):
            parse_sets([bad])
    out = cli("up", "up_sim", "--set", "mode=[", "--print")
    assert out.returncode == 2 and "--set mode" in out.stderr and "Traceback" not in out.stderr


def test_the_verifier_and_the_link_are_assembled_from_their_settings():
    """`VerifierConfig.from_params` reads a verifier's model parameters as the command and a fleet's
    replicas do (None or missing: the default); `open_link` gives no link without a cloud and refuses
    two clouds at once."""
    from spec_edge_cloud.decoding.static_cache import CacheConfig
    from spec_edge_cloud.modeling.placement import CPU_FP32
    from spec_edge_cloud.transport.assembly import VerifierConfig, open_link, pacer
    cfg = VerifierConfig.from_params({"target_dir": "models/target", "exits_dir": None, "exit_layers": [2, 4],
                                      "target_profile": "", "device": "cpu", "dtype": "float32", "cache": None})
    assert cfg == VerifierConfig("models/target", None, (2, 4), None, CPU_FP32, CacheConfig())
    assert VerifierConfig.from_params({"target_dir": "t", "cache_slots": 3, "compile": False}).cache.slots == 3
    assert pacer(None) is None and pacer("go2-orin-a100").profile.name == "go2-orin-a100"
    draft = tiny_bundle("llama", seed=1, layers=2)
    assert open_link(draft) is None
    with pytest.raises(ValueError, match="not both"):
        open_link(draft, "tcp://127.0.0.1:1", inprocess=cfg)
