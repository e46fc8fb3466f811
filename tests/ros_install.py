"""An install prefix laid out as `colcon build --symlink-install` lays out this package, built from
setup.py itself (its data_files and console scripts, setup.cfg's script folder), never from a list
kept here: the ament index marker, share/spec_edge_cloud/{launch,config,models,data}, and one
executable per console script under lib/spec_edge_cloud/. With AMENT_PREFIX_PATH naming it,
launch_ros finds the package, its share directory and its executables as on a ROS 2 install.

The package's Python code is not copied: the executables run this interpreter, which imports the
package under test (the editable install, or PYTHONPATH=src in a worktree)."""
from __future__ import annotations

import configparser
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "spec_edge_cloud"
SETUP_FIELDS = """
import json, runpy, setuptools
seen = {}
setuptools.setup = lambda **fields: seen.update(fields)   # read setup()'s arguments, install nothing
runpy.run_path("setup.py")
print(json.dumps({"data_files": seen["data_files"], "console_scripts": seen["entry_points"]["console_scripts"]}))
"""

def require_launch() -> None:
    """Skip, saying why, where the launch wheels are not installed (they come only from ../shared/wheels)."""
    for module in ("launch", "launch_ros", "launch_testing"):
        pytest.importorskip(module, reason=f"{module} is not installed: the ROS 2 launch wheels come from "
                                           "../shared/wheels (scripts/launch-wheels.sh, run by `make test`), "
                                           "absent here")


def setup_fields() -> dict:
    """setup.py's data_files and console scripts, as setuptools reads them."""
    out = subprocess.run([sys.executable, "-c", SETUP_FIELDS], cwd=ROOT, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def script_folder() -> str:
    """Where setup.cfg installs console scripts, relative to the prefix ($base/lib/spec_edge_cloud)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["install"]["install_scripts"].removeprefix("$base/")


def build_install_prefix(prefix: Path) -> Path:
    """Lay out `prefix` as colcon would install this package (symlinks to the sources) and return it."""
    fields = setup_fields()
    for destination, files in fields["data_files"]:
        folder = prefix / destination
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            (folder / Path(name).name).symlink_to(ROOT / name)
    scripts = prefix / script_folder()
    scripts.mkdir(parents=True, exist_ok=True)
    for entry in fields["console_scripts"]:
        name, target = (part.strip() for part in entry.split("="))
        module, function = target.split(":")
        script = scripts / name
        script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
                          f"sys.exit({function}())\n")
        script.chmod(0o755)
    return prefix


def ament_environment(prefix: Path) -> dict[str, str]:
    """The variables `source install/setup.bash` would set for this package, plus the source tree on
    PYTHONPATH so the executables import the code under test."""
    return {"AMENT_PREFIX_PATH": os.pathsep.join(filter(None, [str(prefix), os.environ.get("AMENT_PREFIX_PATH")])),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory):
    """An install prefix of this package, with the environment sourcing it would give (launch logs in it)."""
    prefix = build_install_prefix(tmp_path_factory.mktemp("install"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ament_environment(prefix).items():
            patch.setenv(key, value)
        patch.setenv("ROS_LOG_DIR", str(prefix / "log"))
        yield prefix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_launch_test(name: str, out_dir: Path, timeout_s: float, **arguments: str) -> str:
    """Run tests/launch_tests/<name> with launch_testing's runner (`launch_test`), launch arguments
    given as name:=value; fail unless every test it ran passed. Returns its output."""
    xml = out_dir / f"{name}.xml"
    cmd = [sys.executable, "-m", "launch_testing.launch_test", "--junit-xml", str(xml),
           str(ROOT / "tests" / "launch_tests" / name)] + [f"{k}:={v}" for k, v in arguments.items()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"launch_test {name} exited with {run.returncode}:\n{output[-6000:]}"
    suites = ElementTree.parse(xml).getroot()
    counts = {k: int(suites.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] > 0 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    return output
