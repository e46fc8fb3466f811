"""launch/gazebo.launch.py, checked without importing `launch` (not installable here): it parses,
names only our package and a documented set of external ROS packages and executables, and its
arguments are exactly the keys of config/gazebo.yaml."""
import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "gazebo.launch.py"
# External ROS packages the launch file needs on a real install (listed in docs/sim.md too).
EXTERNAL_PACKAGES = {"ros_gz_sim", "ros_gz_bridge"}
EXTERNAL_EXECUTABLES = {("ros_gz_sim", "create"), ("ros_gz_bridge", "parameter_bridge")}
IMPORTABLE = {"os", "yaml", "ament_index_python.packages", "launch", "launch.actions",
              "launch.launch_description_sources", "launch.substitutions", "launch_ros.actions"}
BRIDGE_SPEC = re.compile(r"^@(geometry_msgs|sensor_msgs|nav_msgs|rosgraph_msgs)/msg/[A-Z]\w+[\[\]@]gz\.msgs\.[A-Z]\w+$")


def tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def calls(t, name):
    for node in ast.walk(t):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                yield node


def constants(t):
    return {n.targets[0].id: ast.literal_eval(n.value) for n in t.body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
            and isinstance(n.value, (ast.Constant, ast.Tuple, ast.Dict))}


def resolve(node, consts):
    if isinstance(node, ast.Name):
        return consts[node.id]
    return ast.literal_eval(node)


def test_parses_and_imports_only_launch_modules():
    t = tree()
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in t.body)
    imported = {n.module for n in t.body if isinstance(n, ast.ImportFrom)} | \
               {a.name for n in t.body if isinstance(n, ast.Import) for a in n.names}
    assert imported <= IMPORTABLE, imported - IMPORTABLE


def test_packages_executables_and_files_exist_or_are_documented_externals():
    t, consts = tree(), constants(tree())
    ours = re.search(r"<name>(\w+)</name>", (ROOT / "package.xml").read_text()).group(1)
    assert consts["PACKAGE"] == ours
    shares = {resolve(c.args[0], consts) for c in calls(t, "get_package_share_directory")}
    nodes = {(resolve(k["package"], consts), resolve(k["executable"], consts))
             for c in calls(t, "Node") for k in [{kw.arg: kw.value for kw in c.keywords}]}
    assert shares | {p for p, _ in nodes} <= EXTERNAL_PACKAGES | {ours}
    assert nodes <= EXTERNAL_EXECUTABLES and nodes, nodes
    assert (ROOT.joinpath(*consts["CONFIG"])).is_file()
    docs = (ROOT / "docs" / "sim.md").read_text()
    for name in EXTERNAL_PACKAGES | {e for _, e in EXTERNAL_EXECUTABLES}:
        assert name in docs, f"{name} is not documented in docs/sim.md"


def test_arguments_match_config_and_topics_match_the_embedded_sim():
    t = tree()
    params = yaml.safe_load((ROOT / "config" / "gazebo.yaml").read_text())["gazebo"]["ros__parameters"]
    used = {ast.literal_eval(n.slice) for n in ast.walk(t)
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "cfg"}
    assert used == set(params), f"unused: {set(params) - used}, undeclared: {used - set(params)}"
    assert set(constants(t)["DESCRIPTIONS"]) == set(params), "every launch argument needs a description"
    bridge = next(c for c in calls(t, "Node")
                  if any(kw.arg == "executable" and ast.literal_eval(kw.value) == "parameter_bridge" for kw in c.keywords))
    kw = {k.arg: k.value for k in bridge.keywords}
    specs = [ast.literal_eval(e.elts[1]) if isinstance(e, ast.List) else ast.literal_eval(e).removeprefix("/clock")
             for e in kw["arguments"].elts]
    assert all(BRIDGE_SPEC.match(s) for s in specs), specs
    targets = {ast.literal_eval(pair.elts[1]) for pair in kw["remappings"].elts}
    node_source = (ROOT / "src" / "spec_edge_cloud" / "ros" / "sim_node.py").read_text()
    assert targets == {"/cmd_vel", "/camera/image_raw", "/odom"}
    # the embedded sim's names are relative (a namespace per robot); in the root namespace they are these
    assert all(f'"{topic.removeprefix("/")}"' in node_source for topic in targets) and '"/clock"' in node_source
