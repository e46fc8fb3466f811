"""Closed-loop evaluation in the sim: timing of answers, the robot's task-ending rule, the CLI's figures."""
import json
import math
from pathlib import Path

import pytest

from spec_edge_cloud import cli
from spec_edge_cloud.sim import episode
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.task import Judge, success_interval
from spec_edge_cloud.sim.world import Go2World
from spec_edge_cloud.training import sim_eval

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def sim():
    world = Go2World()
    camera = HeadCamera(world.model, 128)
    yield world, camera
    camera.close()


def test_parse_timed_keeps_good_sentences_with_the_time_their_last_word_became_final():
    words = "red ball ahead . walk 9.5 . turn left 30 . walk".split()
    answer = sim_eval.Answer(tuple(words), tuple(0.1 * i for i in range(len(words))), done_s=2.0)
    plan = sim_eval.parse_timed(answer)
    assert plan.observation == "red ball ahead" and not plan.says_reached
    assert [a.verb for a in plan.actions] == ["turn"] and plan.ready_s == pytest.approx((1.0,))
    assert plan.rejected == ("walk 9.5", "walk")   # out of range; cut off at the end
    assert sim_eval.parse_timed(sim_eval.Answer.instant("red ball reached . stop .")).says_reached


def test_robot_stands_until_an_action_exists_then_moves(sim):
    world, camera = sim
    episode.start(world, sim_eval.heldout_seeds(1, 5)[0])
    x0, y0, _ = world.pose()
    words = "blue box ahead . walk 1.0 .".split()
    answer = sim_eval.Answer(tuple(words), (0.0, 0.0, 0.0, 0.0, 1.5, 1.5, 1.5), done_s=1.5)
    moved_at = []

    def on_tick(w):
        if not moved_at and math.hypot(w.pose()[0] - x0, w.pose()[1] - y0) > 0.05:
            moved_at.append(w.time - start)
    start = world.time
    plan = sim_eval.parse_timed(answer)
    episode.execute(world, plan.actions, Judge(world, 60.0), on_tick, budget_s=answer.done_s + 2.0,
                    ready_s=plan.ready_s)
    assert moved_at and 1.5 <= moved_at[0] < 2.5


def test_the_task_ends_when_the_model_says_reached_twice_away_from_the_goal(sim):
    world, camera = sim
    episode.start(world, sim_eval.heldout_seeds(1, 7)[0])
    assert world.goal_distance() > 1.5
    calls = []

    def planner(image, text):
        calls.append(text)
        return sim_eval.Answer.instant(" ".join(text.split()[-2:]) + " reached . stop .")
    outcome, answers, rejected = sim_eval.run_planner(world, camera, planner, timeout_s=30.0)
    assert (outcome.success, outcome.reason, answers, rejected) == (False, "stopped", 2, [])
    assert outcome.time < 2.0
    episode.start(world, sim_eval.heldout_seeds(1, 7)[0])
    outcome, answers, _ = sim_eval.run_planner(world, camera, planner, timeout_s=3.0, reached_confirmations=None)
    assert outcome.reason == "timeout" and answers > 2


def test_success_interval_is_wilson_and_refuses_no_episodes():
    assert success_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert success_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    lo, hi = success_interval(45, 100)
    assert lo < 0.45 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    with pytest.raises(ValueError):
        success_interval(0, 0)


def test_sim_eval_cli_prints_the_figures_beside_the_expert(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(["sim", "eval", "--target", str(MODELS / "target"), "--episodes", "2", "--seed", "3",
                     "--timeout", "4", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in ("episodes", "success_rate", "collision_rate", "timeout_rate", "expert_success_rate"):
        assert key in figures, key
    assert figures["episodes"] == 2 and figures["model"]["seeds"] == figures["expert"]["seeds"]
    assert not set(figures["model"]["seeds"]) & sim_eval.training_layouts(MODELS / "target")
    assert "expert on the same rooms" in capsys.readouterr().out


def test_sim_eval_cli_runs_the_pipeline_in_a_mode(tmp_path):
    out = tmp_path / "eval.json"
    assert cli.main(["sim", "eval", "--target", str(MODELS / "target"), "--draft", str(MODELS / "draft"),
                     "--mode", "spec-ee-pre", "--regime", "native", "--episodes", "1", "--timeout", "3",
                     "--no-expert", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["mode"] == "spec-ee-pre" and figures["expert_success_rate"] is None
    assert figures["model"]["answers"] >= 1 and figures["regime"].startswith("native")


def test_sim_eval_cli_refuses_bad_arguments(tmp_path, capsys):
    assert cli.main(["sim", "eval", "--mode", "spec", "--episodes", "1"]) == 2
    assert cli.main(["sim", "eval", "--target", str(tmp_path), "--episodes", "1"]) == 2
    assert cli.main(["sim", "eval", "--episodes", "0"]) == 2
    assert "error" in capsys.readouterr().out


def test_sim_eval_card_writes_the_figures_into_both_model_cards(tmp_path):
    import shutil
    for name in ("target", "draft"):
        shutil.copytree(MODELS / name, tmp_path / name)
    assert cli.main(["sim", "eval", "--target", str(tmp_path / "target"), "--episodes", "1", "--seed", "4",
                     "--timeout", "3", "--card"]) == 0
    for name in ("target", "draft"):
        card = json.loads((tmp_path / name / "card.json").read_text())
        assert card["sim"]["target"]["episodes"] == card["sim"]["expert"]["episodes"] == 1
        assert card["sim_commands"]["target"].endswith("--episodes 1 --seed 4 --timeout 3")
        readme = (tmp_path / name / "README.md").read_text()
        assert "95% interval (Wilson)" in readme and "--episodes 1 --seed 4" in readme
    assert cli.main(["sim", "eval", "--draft", str(MODELS / "draft"), "--mode", "spec", "--card"]) == 2
