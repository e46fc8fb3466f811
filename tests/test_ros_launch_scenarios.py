"""One source per scenario: each launch file is built from its config/up_*.yaml, and `up` and the
launch file (through launch.LaunchService, against an install prefix laid out as colcon lays it
out) start the same executables with the same arguments, parameters and environment. The processes
run behind a launch prefix that only sleeps, so what is compared is exactly what each runner
executes; the nodes themselves run in tests/test_ros_launch_{sim,replay,cloud}.py."""
import os
import sys
from pathlib import Path

import pytest
import yaml

from ros_install import ROOT, ament_environment, build_install_prefix, require_launch
from spec_edge_cloud.ros.launcher import entry_points, load_up_config, node_executables, read_scenario

SCENARIOS = {"sim": "up_sim", "replay": "up_replay", "cloud": "up_cloud", "robot": "up_robot"}


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, monkeypatch_module):
    require_launch()
    install = build_install_prefix(tmp_path_factory.mktemp("install"))
    for key, value in ament_environment(install).items():
        monkeypatch_module.setenv(key, value)
    for key in ("OMP_NUM_THREADS",):   # set by conftest, and by the scenarios: seen only if a runner sets it
        monkeypatch_module.delenv(key, raising=False)
    return install


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def parameters_of(executable: str, files: list[str], overrides: list[str]) -> dict:
    """The parameters a node gets: its sections of the parameter files in order (by node name or /**),
    then the -p overrides."""
    merged = {}
    for path in files:
        for key, section in (yaml.safe_load(Path(path).read_text()) or {}).items():
            if key.split("/")[-1] in ("**", executable):   # /**, NODE, /**/NODE
                merged |= (section or {}).get("ros__parameters", {})
    for item in overrides:
        name, _, value = item.partition(":=")
        merged[name] = yaml.safe_load(value)
    return merged


def normalise(executable: str, args: list[str]) -> tuple[list[str], dict]:
    """Arguments before --ros-args, and the parameters after it."""
    if "--ros-args" not in args:
        return args, {}
    at = args.index("--ros-args")
    ros = args[at + 1:]
    files = [ros[i + 1] for i, a in enumerate(ros) if a == "--params-file"]
    overrides = [ros[i + 1] for i, a in enumerate(ros) if a == "-p"]
    assert len(files) * 2 + len(overrides) * 2 == len(ros), f"unexpected ROS arguments {ros}"
    return args[:at], parameters_of(executable, files, overrides)


def from_up(path: Path) -> dict:
    scripts = {target: name for name, target in entry_points().items()}
    started = {}
    for spec in load_up_config(path).processes:
        code = spec.argv[2]
        target = code.split("from ")[1].split(";")[0].replace(" import ", ":")
        executable = scripts[target]
        started[executable] = (*normalise(executable, list(spec.argv[3:])), spec.env)
    return started


def from_launch(launch_file: Path, expected: int) -> dict:
    """What LaunchService starts for a launch file: executable name -> (arguments, parameters, env)."""
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler, SetLaunchConfiguration, Shutdown
    from launch.event_handlers import OnProcessStart
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    started = {}

    def record(event, context):
        cmd = list(event.cmd)
        at = cmd.index("--") + 1            # past the sleeping prefix
        executable = Path(cmd[at]).name
        args, params = normalise(executable, cmd[at + 1:])   # the parameter files exist while it runs
        env = {k: v for k, v in (event.env or {}).items() if os.environ.get(k) != v}
        started[executable] = (args, params, env)
        return [Shutdown(reason="recorded")] if len(started) == expected else []

    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)' --"
    service = LaunchService(argv=[])
    service.include_launch_description(LaunchDescription([
        SetLaunchConfiguration("launch-prefix", sleeper),
        RegisterEventHandler(OnProcessStart(on_start=record)),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)))]))
    service.run()
    return started


@pytest.mark.parametrize("launch_name", sorted(SCENARIOS))
def test_launch_file_and_up_start_the_same_processes_with_the_same_parameters(prefix, launch_name):
    share = prefix / "share" / "spec_edge_cloud"
    up = from_up(share / "config" / f"{SCENARIOS[launch_name]}.yaml")
    launched = from_launch(share / "launch" / f"{launch_name}.launch.py", len(up))
    assert sorted(launched) == sorted(up)
    for executable, (args, params, env) in up.items():
        assert launched[executable] == (args, params, env), executable
        assert params or executable not in node_executables(), f"{executable}: no parameters read (file keys?)"
    if launch_name in ("sim", "replay", "cloud"):   # shipped files, found through the share directory
        target = up["verifier_node"][1]["target_dir"]
        assert target == str(share / "models" / "target") and Path(target, "config.json").is_file()


@pytest.mark.parametrize("name", sorted(SCENARIOS.values()))
def test_every_var_of_a_scenario_has_a_description(name):
    scenario = read_scenario(ROOT / "config" / f"{name}.yaml")
    assert scenario.variables and all(v.description for v in scenario.variables.values()), name


def test_a_launch_argument_overrides_the_scenario_var(prefix):
    from launch import LaunchContext
    from spec_edge_cloud.ros.launch_scenario import scenario_launch_description
    description = scenario_launch_description("up_sim")
    declared = {a.name: a for a in description.entities if hasattr(a, "default_value")}
    assert set(declared) == set(read_scenario(ROOT / "config" / "up_sim.yaml").variables)
    assert all(a.description for a in declared.values())
    context = LaunchContext()
    from launch.utilities import perform_substitutions
    assert perform_substitutions(context, declared["target"].default_value) == \
        str(prefix / "share" / "spec_edge_cloud" / "models" / "target")
