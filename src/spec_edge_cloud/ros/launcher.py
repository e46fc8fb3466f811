"""The project's own launcher: the pipeline's processes from a YAML file, without `ros2 launch`.

`ros2 launch` is not installable from PyPI, so a pip install starts its nodes with this instead
(`spec-edge-cloud up CONFIG`, and the demo). A config reads as a list of processes:

    description: what this scenario is
    vars:                          # {name} in any string below; `up --set name=value` changes one
      link_port: {default: 5556, description: the link emulator's port}   # or just `link_port: 5556`
      target: {default: "{share}/models/target", description: the target model's directory}
    processes:
      - name: sim
        executable: sim_node       # a console script of this package (setup.py entry points)
        params_file: sim.yaml      # ROS parameter file, relative to this config file
        parameters:                # overrides, passed as -p name:=value
          publish_instruction: true
      - name: link
        executable: spec-edge-cloud
        args: [link, --listen, "tcp://127.0.0.1:{link_port}"]
        env: {OMP_NUM_THREADS: "1"}   # extra environment variables (optional)

{share} is built in: the folder holding this config's config/ folder (the repository, or the installed
share/spec_edge_cloud). The same file is the source of the ROS 2 launch file of the scenario
(ros/launch_scenario.py): each var a launch argument with its description, {share} FindPackageShare.

ROS nodes (the node entry points) get `--ros-args --params-file ... -p ...`; other executables get
`args` only. Each process runs in its own session, so a Ctrl-C reaches the launcher alone and it
stops the processes itself: SIGINT to each, then SIGTERM, then SIGKILL for any that outlive their
grace period. A process that exits while the others run counts as a failure: the launcher stops
the rest and reports it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import distribution
from pathlib import Path
from typing import TextIO

import yaml

from .share import PACKAGE, share_directories

NODE_MODULE_PREFIX = f"{PACKAGE}.ros."
VAR_PATTERN = re.compile(r"\{(\w+)\}")
PROCESS_KEYS = {"name", "executable", "args", "params_file", "parameters", "env"}
# Seconds a process gets to stop after SIGINT before SIGTERM (the nodes need a few: torch and DDS teardown
# took 4-5 s of a verifier node's exit on this 2-core machine); launch files use the same (sigterm_timeout).
STOP_GRACE_S = 10.0
SHARE = "share"   # the built-in {share}: the package's share directory (launch: FindPackageShare)


class LaunchConfigError(ValueError):
    """An `up` config that cannot be turned into processes; the message says where and why."""


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def command_line(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class UpConfig:
    path: Path
    description: str
    processes: tuple[ProcessSpec, ...]


@dataclass(frozen=True)
class Variable:
    default: object
    description: str


@dataclass(frozen=True)
class Scenario:
    """An up config as written, checked but not filled in: both runners start from this (`up` below,
    `ros2 launch` in ros/launch_scenario.py), so they cannot drift apart."""
    path: Path
    description: str
    variables: dict[str, Variable]
    processes: tuple[dict, ...]

    def share_directory(self) -> Path:
        """What {share} means to `up`: the folder holding config/ (the repository, or an installed share)."""
        return Path(os.path.abspath(self.path)).parent.parent   # not resolved: an install may link to a source tree


def entry_points() -> dict[str, str]:
    """Console scripts of this package: name -> "module:function"."""
    return {e.name: e.value for e in distribution(PACKAGE).entry_points if e.group == "console_scripts"}


def node_executables() -> set[str]:
    return {name for name, target in entry_points().items() if target.startswith(NODE_MODULE_PREFIX)}


def find_config(name: str | Path) -> Path:
    """A config path as given, or a name ("up_sim") looked up in ./config and the installed shares."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name if path.suffix else f"{path.name}.yaml"
    candidates = [Path("config") / stem] + [share / "config" / stem for share in share_directories()]
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(map(str, [path] + candidates))
    raise FileNotFoundError(f"up config {str(name)!r} not found (looked in: {looked})")


def parameter_value(value: object) -> str:
    """A value for `-p name:=value`: rcl reads it as YAML, so write JSON (a YAML subset) to keep types
    ("0" stays a string, 1.0 a double)."""
    if isinstance(value, (str, bool, int, float)) or (isinstance(value, list) and value):
        return json.dumps(value)
    raise LaunchConfigError(f"parameter value {value!r}: only strings, numbers, booleans and non-empty lists")


def references(value: object) -> set[str]:
    """The {var} names used anywhere in a value (strings inside lists and dicts included)."""
    if isinstance(value, list):
        return set().union(*(references(v) for v in value))
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values()))
    return set(VAR_PATTERN.findall(value)) if isinstance(value, str) else set()


def substitute(value: object, variables: dict[str, object]) -> object:
    """Fill {var} in strings (recursively in lists and dicts). A string that is exactly "{var}" takes
    the variable's own type, so a number stays a number."""
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = VAR_PATTERN.fullmatch(value)
    if whole:
        return variables[whole.group(1)]
    return VAR_PATTERN.sub(lambda m: str(variables[m.group(1)]), value)


def read_variable(name: str, raw: object, where: str) -> Variable:
    """A var is `name: value` or `name: {default: value, description: text}`; a default may use {share}."""
    if isinstance(raw, dict):
        if set(raw) != {"default", "description"}:
            raise LaunchConfigError(f"{where}: var {name!r} needs exactly 'default' and 'description'")
        raw, description = raw["default"], str(raw["description"])
    else:
        description = ""
    if isinstance(raw, (dict, list)) or raw is None:
        raise LaunchConfigError(f"{where}: var {name!r} must be a string, number or boolean")
    unknown = references(raw) - {SHARE}
    if unknown:
        raise LaunchConfigError(f"{where}: var {name!r} may use only {{{SHARE}}}, not {sorted(unknown)}")
    return Variable(raw, description)


def read_scenario(path: str | Path) -> Scenario:
    """Read and check an up config: known keys, unique names, executables of this package, parameters
    only for ROS nodes, every {var} defined."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LaunchConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("processes"), list) or not doc["processes"]:
        raise LaunchConfigError(f"{path}: expected a mapping with a non-empty 'processes' list")
    raw_vars = doc.get("vars") or {}
    if SHARE in raw_vars:
        raise LaunchConfigError(f"{path}: {{{SHARE}}} is built in (the package's share directory): not a var")
    variables = {str(k): read_variable(str(k), v, str(path)) for k, v in raw_vars.items()}
    scripts, nodes = entry_points(), node_executables()
    names = set()
    for i, proc in enumerate(doc["processes"]):
        where = f"{path}: processes[{i}]"
        if not isinstance(proc, dict) or not {"name", "executable"} <= set(proc):
            raise LaunchConfigError(f"{where}: each process needs 'name' and 'executable'")
        unknown = set(proc) - PROCESS_KEYS
        if unknown:
            raise LaunchConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(PROCESS_KEYS)})")
        for name in sorted(references(proc) - set(variables) - {SHARE}):
            raise LaunchConfigError(f"{where}: unknown variable {{{name}}} (defined: {sorted(variables)})")
        if proc["name"] in names:
            raise LaunchConfigError(f"{where}: duplicate process name {proc['name']!r}")
        names.add(proc["name"])
        exe = proc["executable"]
        if exe not in scripts:
            raise LaunchConfigError(f"{where}: {exe!r} is not an executable of {PACKAGE} (known: {sorted(scripts)})")
        if exe not in nodes and (proc.get("params_file") or proc.get("parameters")):
            raise LaunchConfigError(f"{where}: {exe} is not a ROS node: give it 'args', not parameters")
        if exe in nodes and proc.get("params_file") and not (path.parent / proc["params_file"]).is_file():
            raise LaunchConfigError(f"{where}: params_file {(path.parent / proc['params_file']).resolve()} not found")
    return Scenario(path, str(doc.get("description", "")), variables, tuple(doc["processes"]))


def load_up_config(path: str | Path, overrides: dict[str, object] | None = None) -> UpConfig:
    """Read an `up` config into command lines; `overrides` replace its vars (unknown names are refused)."""
    scenario = read_scenario(path)
    share = str(scenario.share_directory())
    values: dict[str, object] = {SHARE: share}
    values |= {name: substitute(v.default, {SHARE: share}) for name, v in scenario.variables.items()}
    for name, value in (overrides or {}).items():
        if name not in scenario.variables:
            raise LaunchConfigError(f"{scenario.path}: no variable {name!r} to set (it has: "
                                    f"{sorted(scenario.variables)})")
        values[name] = value
    scripts, nodes = entry_points(), node_executables()
    specs = []
    for raw in scenario.processes:
        proc = substitute(raw, values)
        exe = proc["executable"]
        module, function = scripts[exe].split(":")
        argv = [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]
        argv += [str(a) for a in proc.get("args") or []]
        if exe in nodes:
            argv += ["--ros-args"]
            if proc.get("params_file"):
                argv += ["--params-file", str((scenario.path.parent / proc["params_file"]).resolve())]
            for key, value in (proc.get("parameters") or {}).items():
                argv += ["-p", f"{key}:={parameter_value(value)}"]
        env = {str(k): str(v) for k, v in (proc.get("env") or {}).items()}
        specs.append(ProcessSpec(str(proc["name"]), tuple(argv), env))
    return UpConfig(scenario.path, scenario.description, tuple(specs))


class ProcessGroup:
    """Runs processes side by side; each line they print goes to `echo` as "[name] line" and/or to
    log_dir/name.log."""

    def __init__(self, specs: tuple[ProcessSpec, ...] | list[ProcessSpec], log_dir: Path | None = None,
                 echo: TextIO | None = sys.stdout) -> None:
        self.specs = list(specs)
        self.log_dir, self.echo = log_dir, echo
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._echo_lock = threading.Lock()
        self._interrupted = False

    def start(self) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(spec.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, text=True, errors="replace")
            self.procs[spec.name] = proc
            log = open(self.log_dir / f"{spec.name}.log", "w") if self.log_dir is not None else None
            t = threading.Thread(target=self._pump, args=(spec.name, proc, log), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, name: str, proc: subprocess.Popen, log: TextIO | None) -> None:
        for line in proc.stdout:
            if log is not None:
                log.write(line)
                log.flush()
            if self.echo is not None:
                with self._echo_lock:
                    self.echo.write(f"[{name}] {line}")
                    self.echo.flush()
        if log is not None:
            log.close()

    def exited(self) -> dict[str, int]:
        """Processes that have exited, with their return codes."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def interrupt(self) -> None:
        """SIGINT every running process (what Ctrl-C would do), without waiting; `stop` then waits
        (a second SIGINT could break a node in the middle of its shutdown)."""
        self._signal(signal.SIGINT)
        self._interrupted = True

    def _signal(self, sig: int) -> list[subprocess.Popen]:
        running = [p for p in self.procs.values() if p.poll() is None]
        for p in running:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        return running

    def stop(self, grace_s: float = STOP_GRACE_S) -> dict[str, int]:
        """SIGINT every running process, escalate after `grace_s`; return codes by name (a process
        that had to be killed reports the negative signal number)."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if sig == signal.SIGINT and self._interrupted:
                running = [p for p in self.procs.values() if p.poll() is None]
            else:
                running = self._signal(sig)
            deadline = time.monotonic() + wait_s
            while running and time.monotonic() < deadline:
                running = [p for p in running if p.poll() is None]
                time.sleep(0.05)
        for t in self._threads:
            t.join(timeout=2.0)
        return {name: p.wait() for name, p in self.procs.items()}


def run_group(group: ProcessGroup, out: TextIO = sys.stdout, grace_s: float = STOP_GRACE_S) -> int:
    """Start the group and wait for Ctrl-C/SIGTERM (exit 0 if every process then stops cleanly) or
    for a process to exit on its own (exit 1, after stopping the others)."""
    stop_requested = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop_requested.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        group.start()
        for spec in group.specs:
            out.write(f"up: started {spec.name} (pid {group.procs[spec.name].pid})\n")
        out.flush()
        died: dict[str, int] = {}
        while not stop_requested.is_set() and not died:
            died = group.exited()
            stop_requested.wait(0.1)
        for name, rc in died.items():
            out.write(f"up: {name} exited with code {rc} while the others ran: stopping them\n")
        codes = group.stop(grace_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    unclean = {name: rc for name, rc in codes.items() if rc != 0 and name not in died}
    for name, rc in unclean.items():
        out.write(f"up: {name} did not stop cleanly (code {rc})\n")
    out.write(f"up: {'stopped' if not died and not unclean else 'FAILED'}: "
              + ", ".join(f"{n}={rc}" for n, rc in codes.items()) + "\n")
    out.flush()
    return 1 if died or unclean else 0
