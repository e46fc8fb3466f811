"""launch/replay.launch.py run for real over the shipped bag: tests/launch_tests/replay_launch.py under
launch_testing's own runner, against an install prefix laid out as colcon lays it out, on free
ports: an instruction moves the robot from verified tokens, and every process exits with 0.
Skips, saying why, without the launch wheels."""
import pytest

from ros_install import free_port, install_prefix, require_launch, run_launch_test  # noqa: F401 (a fixture)


@pytest.mark.timeout(600)
def test_replay_launch_answers_over_the_shipped_bag_and_ends_cleanly(install_prefix, tmp_path):
    require_launch()
    out = run_launch_test("replay_launch.py", tmp_path, timeout_s=540, rtt_ms="20",
                          verifier_port=str(free_port()), link_port=str(free_port()))
    assert "replay: moving after" in out
