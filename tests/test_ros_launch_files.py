"""The parameter files and `up` configs (the launch files' source, tests/test_ros_launch_scenarios.py),
cross-checked without ROS: every executable they name is an entry point of the package, every file
they name exists, every parameter they set is one the node declares. An undeclared ROS parameter is
silently ignored by rclpy, so this is what catches a typo."""
import importlib
from pathlib import Path

import pytest
import yaml

from spec_edge_cloud.cli import COMMANDS
from spec_edge_cloud.ros.launcher import entry_points, load_up_config, node_executables

ROOT = Path(__file__).resolve().parents[1]


def declared(node: str) -> set[str]:
    """The parameters a node declares (its PARAMETERS table)."""
    return set(importlib.import_module(f"spec_edge_cloud.ros.{node}").PARAMETERS)


def unset_by_default(node: str) -> set[str]:
    """Typed arrays without a default (a parameter file cannot write an empty list): unset, not listed."""
    table = importlib.import_module(f"spec_edge_cloud.ros.{node}").PARAMETERS
    return {name for name, p in table.items() if getattr(p, "type", None) is not None and not p.default}


def config_sections(path: Path) -> dict:
    """{node name: parameters}; a `/**/node` key (any namespace) counts as `node`."""
    return {k.removeprefix("/**/"): (v or {}).get("ros__parameters", {})
            for k, v in yaml.safe_load(path.read_text()).items()}


PARAMETER_FILES = sorted(p for p in (ROOT / "config").glob("*.yaml") if not p.name.startswith("up_"))


@pytest.mark.parametrize("cfg", PARAMETER_FILES, ids=lambda p: p.name)
def test_parameter_files_set_only_declared_parameters(cfg):
    nodes = node_executables()
    for section, params in config_sections(cfg).items():
        if section in nodes:
            assert set(params) <= declared(section), f"{cfg.name}: {section} does not declare " \
                                                     f"{set(params) - declared(section)}"


@pytest.mark.parametrize("node", ["camera_node", "draft_node", "verifier_node"])
def test_parameter_files_list_every_parameter_of_the_nodes_of_this_issue(node):
    cfg = {"camera_node": "robot.yaml", "draft_node": "robot.yaml", "verifier_node": "cloud.yaml"}[node]
    assert set(config_sections(ROOT / "config" / cfg)[node]) == declared(node) - unset_by_default(node)


@pytest.mark.parametrize("cfg", sorted((ROOT / "config").glob("up_*.yaml")), ids=lambda p: p.name)
def test_up_configs_name_real_executables_files_and_declared_parameters(cfg):
    config = load_up_config(cfg)   # raises on unknown executables, missing params files, unknown vars
    raw = yaml.safe_load(cfg.read_text())["processes"]
    nodes = node_executables()
    for spec, proc in zip(config.processes, raw):
        if proc["executable"] in nodes:
            unknown = set(proc.get("parameters") or {}) - declared(proc["executable"])
            assert not unknown, f"{cfg.name}: {proc['name']} sets undeclared {unknown}"
            if proc.get("params_file"):
                assert proc["executable"] in config_sections(cfg.parent / proc["params_file"])
        else:
            assert spec.argv[spec.argv.index("-c") + 2] in COMMANDS, spec.argv


def test_setup_installs_launch_config_models_and_bags():
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert '*tree("models")' in setup and '*tree("data")' in setup
