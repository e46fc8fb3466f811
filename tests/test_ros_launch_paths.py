"""Paths of node parameters on an install: a relative path is looked up in the working directory,
then in the package's share directory (models and the bag are installed there by setup.py), and a
miss names every absolute path tried. And a node that dies ends the whole launch (on_exit=Shutdown):
sim.launch.py with a draft model that does not exist stops every process, the draft's error naming
the paths it tried."""
import re
import sys
from pathlib import Path

import pytest

from ros_install import ROOT, ament_environment, build_install_prefix, free_port, require_launch
from spec_edge_cloud.ros.share import resolve_path


@pytest.fixture
def installed(tmp_path, monkeypatch):
    prefix = build_install_prefix(tmp_path / "install")
    for key, value in ament_environment(prefix).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "log"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return prefix


def test_the_install_holds_launch_config_models_and_bag(installed):
    share = installed / "share" / "spec_edge_cloud"
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / "spec_edge_cloud").is_file()
    for path in ("launch/sim.launch.py", "config/up_sim.yaml", "models/target/config.json",
                 "models/draft/model.safetensors", "data/bags/sim_small/metadata.yaml"):
        assert (share / path).is_file(), path
    for exe in ("sim_node", "draft_node", "verifier_node", "command_node", "camera_node", "spec-edge-cloud"):
        assert (installed / "lib" / "spec_edge_cloud" / exe).stat().st_mode & 0o111, exe


def test_a_relative_path_resolves_against_the_share_directory_from_anywhere(installed):
    share = installed / "share" / "spec_edge_cloud"
    assert resolve_path("models/target", "target_dir") == share / "models" / "target"
    assert resolve_path("data/bags/sim_small", "bag_path") == share / "data" / "bags" / "sim_small"


def test_the_working_directory_comes_first_and_absolute_paths_are_kept(installed, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert resolve_path("models/target", "target_dir") == ROOT / "models" / "target"
    assert resolve_path(str(ROOT / "models" / "draft"), "draft_model") == ROOT / "models" / "draft"


def test_a_miss_names_every_absolute_path_tried(installed):
    with pytest.raises(FileNotFoundError) as error:
        resolve_path("models/nope", "draft_model")
    message = str(error.value)
    assert message.startswith("parameter draft_model: 'models/nope' not found")
    for tried in (Path.cwd() / "models/nope", installed / "share/spec_edge_cloud/models/nope",
                  Path(sys.prefix) / "share/spec_edge_cloud/models/nope"):
        assert str(tried) in message
    with pytest.raises(FileNotFoundError, match=r"tried: /no/such/dir\)"):
        resolve_path("/no/such/dir", "target_dir")


@pytest.mark.timeout(300)
def test_a_node_that_dies_ends_the_launch(installed):
    require_launch()
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    exits, text = {}, []
    launch_file = installed / "share" / "spec_edge_cloud" / "launch" / "sim.launch.py"
    service = LaunchService(argv=[])
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessExit(on_exit=lambda event, _: exits.update(
            {re.sub(r"-\d+$", "", event.process_name): event.returncode}))),
        RegisterEventHandler(OnProcessIO(on_stdout=lambda e: text.append(e.text.decode()),
                                         on_stderr=lambda e: text.append(e.text.decode()))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)), launch_arguments={
            "draft": "models/missing_draft", "target_profile": "", "draft_profile": "",
            "verifier_port": str(free_port()), "link_port": str(free_port())}.items())]))
    service.run()   # returns only once every process has ended
    assert set(exits) == {"sim_node", "command_node", "draft_node", "verifier_node", "link"}, exits
    assert exits["draft_node"] != 0
    output = "".join(text)
    assert "parameter draft_model: 'models/missing_draft' not found" in output, output[-3000:]
    assert str(installed / "share" / "spec_edge_cloud" / "models" / "missing_draft") in output
