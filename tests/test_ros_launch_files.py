"""The launch files, parameter files and `up` configs, cross-checked without importing `launch` (it is
not installable here): every executable they name is an entry point of the package, every file they
name exists, every parameter they set is one the node declares, every launch argument they use is
declared (and every declared one used), and every argument passed to an included file is one it
declares. An undeclared ROS parameter is silently ignored by rclpy, so this is what catches a typo."""
import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml

from spec_edge_cloud.cli import COMMANDS
from spec_edge_cloud.ros.launcher import entry_points, load_up_config, node_executables

ROOT = Path(__file__).resolve().parents[1]
OURS = ("robot", "sim", "replay", "cloud", "loopback_cloud")
LAUNCH_FILES = {name: ROOT / "launch" / f"{name}.launch.py" for name in OURS}
IMPORTABLE = {"os", "ament_index_python.packages", "launch", "launch.actions", "launch.conditions",
              "launch.launch_description_sources", "launch.substitutions", "launch_ros.actions",
              "launch_ros.parameter_descriptions", "launch_ros.substitutions"}
PACKAGE = re.search(r"<name>(\w+)</name>", (ROOT / "package.xml").read_text()).group(1)


def declared(node: str) -> set[str]:
    """The parameters a node declares (its PARAMETERS table)."""
    return set(importlib.import_module(f"spec_edge_cloud.ros.{node}").PARAMETERS)


def unset_by_default(node: str) -> set[str]:
    """Typed arrays without a default (a parameter file cannot write an empty list): unset, not listed."""
    table = importlib.import_module(f"spec_edge_cloud.ros.{node}").PARAMETERS
    return {name for name, p in table.items() if getattr(p, "type", None) is not None and not p.default}


def calls(tree, name):
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and ((isinstance(n.func, ast.Name) and n.func.id == name)
                                        or (isinstance(n.func, ast.Attribute) and n.func.attr == name)):
            yield n


def keywords(call) -> dict:
    return {k.arg: k.value for k in call.keywords}


def literal_keys(node) -> set[str]:
    """Keys of a dict literal, or of a comprehension over a literal tuple ({k: f(k) for k in (...)})."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "items":
        node = node.func.value
    if isinstance(node, ast.Dict):
        return {ast.literal_eval(k) for k in node.keys}
    if isinstance(node, ast.DictComp):
        return set(ast.literal_eval(node.generators[0].iter))
    raise AssertionError(f"not a literal mapping: {ast.dump(node)[:80]}")


def launch_arguments(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    return next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "ARGUMENTS")


def config_sections(path: Path) -> dict:
    """{node name: parameters}; a `/**/node` key (any namespace) counts as `node`."""
    return {k.removeprefix("/**/"): (v or {}).get("ros__parameters", {})
            for k, v in yaml.safe_load(path.read_text()).items()}


@pytest.mark.parametrize("name", OURS)
def test_launch_file_parses_and_imports_only_launch_modules(name):
    tree = ast.parse(LAUNCH_FILES[name].read_text(), filename=str(LAUNCH_FILES[name]))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    imported = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)} | \
               {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert imported <= IMPORTABLE, imported - IMPORTABLE
    consts = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
    assert ast.literal_eval(consts["PACKAGE"]) == PACKAGE
    assert "NOT RUN" in ast.get_docstring(tree)


@pytest.mark.parametrize("name", OURS)
def test_nodes_executables_config_files_and_parameters_exist(name):
    tree = ast.parse(LAUNCH_FILES[name].read_text())
    nodes, scripts = node_executables(), entry_points()
    for call in calls(tree, "Node"):
        kw = keywords(call)
        assert ast.literal_eval(kw["package"]) == PACKAGE if isinstance(kw["package"], ast.Constant) \
            else kw["package"].id == "PACKAGE"
        exe = ast.literal_eval(kw["executable"])
        assert exe in nodes, f"{name}: {exe} is not a node entry point of setup.py ({sorted(nodes)})"
        params = kw["parameters"].elts
        file_call, overrides = params[0], params[1]
        assert file_call.func.id == "config"
        cfg = ROOT / "config" / ast.literal_eval(file_call.args[0])
        assert cfg.is_file(), cfg
        section = config_sections(cfg).get(exe)
        assert section, f"{cfg.name} has no `{exe}: ros__parameters` section"
        unknown = literal_keys(overrides) - declared(exe)
        assert not unknown, f"{name}: {exe} does not declare {unknown}"
    for call in calls(tree, "ExecutableInPackage"):
        exe = ast.literal_eval(call.args[0])
        assert exe in scripts, exe
        process = next(c for c in calls(tree, "ExecuteProcess"))
        command = ast.literal_eval(keywords(process)["cmd"].elts[1])
        assert command in COMMANDS, f"spec-edge-cloud has no command {command!r}"


@pytest.mark.parametrize("name", OURS)
def test_launch_arguments_are_declared_used_and_passed_to_includes_correctly(name):
    path = LAUNCH_FILES[name]
    tree = ast.parse(path.read_text())
    args = launch_arguments(path)
    assert all(isinstance(v, str) for v in args.values()), "launch argument defaults must be strings"
    aliases = {"LaunchConfiguration"} | {n.targets[0].id for n in ast.walk(tree) if isinstance(n, ast.Assign)
                                         and isinstance(n.value, ast.Name) and n.value.id == "LaunchConfiguration"}
    used = set()
    for alias in aliases:
        for call in calls(tree, alias):
            if isinstance(call.args[0], ast.Constant):
                used.add(call.args[0].value)
    for comp in (n for n in ast.walk(tree) if isinstance(n, ast.DictComp)):  # {k: arg(k) for k in (...)}
        used |= set(ast.literal_eval(comp.generators[0].iter))
    for helper in ("text",):  # text("name") wraps LaunchConfiguration("name")
        used |= {c.args[0].value for c in calls(tree, helper)}
    assert used == set(args), f"{name}: undeclared {used - set(args)}, unused {set(args) - used}"
    for call in calls(tree, "IncludeLaunchDescription"):
        included = ROOT / "launch" / ast.literal_eval(call.args[0].args[0])
        assert included.is_file(), included
        passed = literal_keys(keywords(call)["launch_arguments"])
        assert passed <= set(launch_arguments(included)), \
            f"{name} passes {passed - set(launch_arguments(included))} that {included.name} does not declare"


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


def test_sim_launch_and_up_sim_run_the_same_nodes():
    """The two ways to start the embedded sim stay in step: the same node executables."""
    launched = set()
    for name in ("sim", "robot", "loopback_cloud", "cloud"):
        tree = ast.parse(LAUNCH_FILES[name].read_text())
        launched |= {ast.literal_eval(keywords(c)["executable"]) for c in calls(tree, "Node")}
    launched.discard("camera_node")   # robot.launch.py's camera is off in the sim (camera:=false)
    up = {p["executable"] for p in yaml.safe_load((ROOT / "config" / "up_sim.yaml").read_text())["processes"]}
    assert launched == up - {"spec-edge-cloud"}
    assert "spec-edge-cloud" in up and "ExecutableInPackage" in LAUNCH_FILES["loopback_cloud"].read_text()


def test_setup_installs_launch_and_config_files():
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
