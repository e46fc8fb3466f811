"""launch/cloud.launch.py run for real: tests/launch_tests/cloud_launch.py under launch_testing's own
runner, against an install prefix laid out as colcon lays it out: the verifier loads the shipped
target from the share directory, serves, and exits with 0. Skips, saying why, without the launch wheels."""
import pytest

from ros_install import free_port, install_prefix, require_launch, run_launch_test  # noqa: F401 (a fixture)


@pytest.mark.timeout(400)
def test_cloud_launch_serves_and_ends_cleanly(install_prefix, tmp_path):
    require_launch()
    run_launch_test("cloud_launch.py", tmp_path, timeout_s=360, bind=f"tcp://127.0.0.1:{free_port()}")
