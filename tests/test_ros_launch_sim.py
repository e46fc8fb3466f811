"""launch/sim.launch.py run for real: tests/launch_tests/sim_launch.py (a launch_testing file) under
launch_testing's own runner, against an install prefix laid out as colcon lays it out, on free
ports, the models at their own speed (no timing emulation) so it stays short. The runner must pass
every test it ran (the task moves the robot from verified tokens; every process exits with 0).
Skips, saying why, without the launch wheels."""
import pytest

from ros_install import free_port, install_prefix, require_launch, run_launch_test  # noqa: F401 (a fixture)


@pytest.mark.timeout(600)
def test_sim_launch_runs_the_task_and_ends_cleanly(install_prefix, tmp_path):
    require_launch()
    out = run_launch_test("sim_launch.py", tmp_path, timeout_s=540, rtt_ms="20", verifier_port=str(free_port()), link_port=str(free_port()))
    assert "moving after" in out
