"""`spec-edge-cloud demo --short` end to end: the up_sim processes (MuJoCo sim, command node, draft node,
verifier node behind the link emulator, real ZeroMQ and DDS), one episode in two modes in the
emulated Go2 regime, per-episode figures on the console and a report with plots under --out."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from ros_models import make_pair  # noqa: E402
from spec_edge_cloud.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_demo_short_runs_end_to_end(tmp_path):
    target, draft = make_pair(tmp_path / "models")
    p = subprocess.run([sys.executable, "-m", "spec_edge_cloud.cli", "demo", "--short", "--out", str(tmp_path / "runs"),
                        "--target", str(target), "--draft", str(draft)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = p.stdout
    assert p.returncode == 0, out[-3000:] + p.stderr[-3000:]
    assert "Go2 deployment, EMULATED" in out and "Episode 1/1" in out
    for mode in ("cloud", "spec-ee-pre"):
        assert any(line.startswith(f"  {mode} ") and "TTFA" in line for line in out.splitlines()), out
    report = next((tmp_path / "runs").glob("demo-*/report.md"))
    for name in ("latency.png", "trajectories.png", "logs/verifier.log", "logs/draft.log"):
        assert (report.parent / name).is_file(), name
    results = json.loads((report.parent / "results.json").read_text())
    runs = {r["mode"]: r for r in results["runs"]}
    assert set(runs) == {"cloud", "spec-ee-pre"}
    for r in runs.values():
        assert r["responses"] and r["first_ttc_s"] > 0 and r["ttfa_s"] > 0, r
        assert r["outcome"] is not None and r["outcome"]["seed"] == 0
        done = [resp for resp in r["responses"] if resp["ttc_s"] is not None]   # the last may be cut off
        assert done and all(resp["metrics"]["unverified_from"] is None for resp in done), "the cloud was not used"
    assert runs["cloud"]["responses"][0]["metrics"]["drafted"] == 0
    assert runs["spec-ee-pre"]["responses"][0]["metrics"]["drafted"] > 0
    assert "| cloud |" in report.read_text() and "| spec-ee-pre |" in report.read_text()


def test_demo_refuses_bad_arguments_before_starting_anything(capsys, tmp_path):
    assert main(["demo", "--modes", "cloud,warp"]) == 2
    assert "modes must be among" in capsys.readouterr().err
    assert main(["demo", "--target", str(tmp_path / "none")]) == 2
    assert "no target model" in capsys.readouterr().err
