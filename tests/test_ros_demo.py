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


def test_demo_report_gives_success_intervals_decisions_per_minute_and_marks_the_goal(tmp_path):
    from spec_edge_cloud.ros.demo_observer import ModeRun, ResponseLog
    from spec_edge_cloud.ros.demo_report import mode_summary, write_report
    from spec_edge_cloud.ros.demo_session import episode_setup

    setups = [episode_setup(s) for s in (0, 1)]

    def run(mode, setup, success, answers):
        metrics = {"drafted": 8, "acceptance": 0.75, "tokens_per_round": 4.0} if mode != "cloud" else {}
        responses = [ResponseLog(f"{mode}-{i}", 10.0 + i, 10.0 + i, end_t=10.5 + i, metrics=metrics)
                     for i in range(answers)]
        outcome = {"seed": setup.seed, "success": success, "reason": "reached" if success else "timeout",
                   "time": 12.0 if success else 30.0}
        return ModeRun(mode, setup.seed, setup.instruction, 0.0, 30.0, outcome, responses, [], [(0.0, 0.0), (1.0, 1.0)])
    runs = [run("cloud", setups[0], False, 3), run("cloud", setups[1], False, 3),
            run("spec-ee-pre", setups[0], True, 6), run("spec-ee-pre", setups[1], True, 6)]
    rows = {r["mode"]: r for r in mode_summary(runs, ["cloud", "spec-ee-pre"])}
    assert rows["cloud"]["decisions_per_minute"] == pytest.approx(6.0)
    assert rows["spec-ee-pre"]["decisions_per_minute"] == pytest.approx(12.0)
    assert rows["spec-ee-pre"]["task_s"] == 12.0 and rows["cloud"]["task_s"] is None
    lo, hi = rows["spec-ee-pre"]["success_interval"]
    assert 0.3 < lo < 0.4 and hi == 1.0
    report = write_report(tmp_path, ["header"], runs, setups, ["cloud", "spec-ee-pre"]).read_text()
    assert "| spec-ee-pre | 2/2 (95% CI 34%-100%) | 12.0 |" in report and "share of drafted tokens" in report
    assert "| 0.75 | 4.00 |" in report and rows["cloud"]["tokens_per_round"] is None
    assert (tmp_path / "trajectories.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["per_mode"][1]["successes"] == 2
