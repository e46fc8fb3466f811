"""A ROS 2 launch description built from an `up` scenario (config/up_*.yaml), for `ros2 launch`.

One file per scenario describes its processes; `spec-edge-cloud up` (ros/launcher.py) and the
launch files under launch/ both read it through `read_scenario`, so the two runners start the same
executables with the same parameter files, parameters, arguments and environment. Here each var
becomes a launch argument (with its description) and {share} becomes FindPackageShare; each ROS
node a launch_ros Node, each other executable an ExecuteProcess of the package's executable. Any
process that ends ends the launch (on_exit=Shutdown()), as `up` stops everything when one dies:
a verifier or draft node that cannot load its model must not leave the others running idle. At
shutdown each process gets `up`'s grace period between SIGINT and SIGTERM.

Imports `launch` and `launch_ros` (a ROS 2 install, or the wheels of ../shared/wheels): only the
launch files import this module.
"""
from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import ExecutableInPackage, FindPackageShare

from .launcher import SHARE, STOP_GRACE_S, VAR_PATTERN, Scenario, node_executables, read_scenario
from .share import PACKAGE


def scenario_launch_description(name: str) -> LaunchDescription:
    """The launch description of config/<name>.yaml in the package's share directory."""
    share = Path(get_package_share_directory(PACKAGE))
    return launch_description(read_scenario(share / "config" / f"{name}.yaml"))


def launch_description(scenario: Scenario) -> LaunchDescription:
    arguments = [DeclareLaunchArgument(name, default_value=template(str(var.default)),
                                       description=var.description)
                 for name, var in scenario.variables.items()]
    nodes = node_executables()
    actions = [node(proc, scenario) if proc["executable"] in nodes else process(proc)
               for proc in scenario.processes]
    return LaunchDescription(arguments + actions)


def template(text: str) -> list:
    """A string with {var}s as launch substitutions: the launch argument of each var, {share} the
    package's share directory."""
    parts: list = []
    at = 0
    for match in VAR_PATTERN.finditer(text):
        if match.start() > at:
            parts.append(text[at:match.start()])
        var = match.group(1)
        parts.append(FindPackageShare(PACKAGE) if var == SHARE else LaunchConfiguration(var))
        at = match.end()
    if at < len(text) or not parts:
        parts.append(text[at:])
    return parts


def parameter(value: object, scenario: Scenario) -> object:
    """A parameter override: "{var}" alone keeps the var's type (as `up` does: a number stays a number,
    a string stays a string even when it reads as a number); other {var} strings are strings."""
    if not isinstance(value, str) or not VAR_PATTERN.search(value):
        return value
    whole = VAR_PATTERN.fullmatch(value)
    if whole and whole.group(1) != SHARE:
        kind = type(scenario.variables[whole.group(1)].default)
        return ParameterValue(LaunchConfiguration(whole.group(1)), value_type=kind)
    return ParameterValue(template(value), value_type=str)


def node(proc: dict, scenario: Scenario) -> Node:
    parameters: list = []
    if proc.get("params_file"):
        parameters.append(str((scenario.path.parent / proc["params_file"]).resolve()))
    overrides = {key: parameter(value, scenario) for key, value in (proc.get("parameters") or {}).items()}
    if overrides:
        parameters.append(overrides)
    return Node(package=PACKAGE, executable=proc["executable"], output="screen", parameters=parameters,
                arguments=[template(str(a)) for a in proc.get("args") or []] or None,
                additional_env={str(k): str(v) for k, v in (proc.get("env") or {}).items()} or None,
                sigterm_timeout=str(STOP_GRACE_S),
                on_exit=Shutdown(reason=f"{proc['name']} ({proc['executable']}) exited"))


def process(proc: dict) -> ExecuteProcess:
    return ExecuteProcess(cmd=[ExecutableInPackage(proc["executable"], PACKAGE)]
                          + [template(str(a)) for a in proc.get("args") or []],
                          name=proc["name"], output="screen",
                          additional_env={str(k): str(v) for k, v in (proc.get("env") or {}).items()} or None,
                          sigterm_timeout=str(STOP_GRACE_S),
                on_exit=Shutdown(reason=f"{proc['name']} ({proc['executable']}) exited"))
