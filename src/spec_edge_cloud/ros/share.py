"""Where the package's installed files are, and how a node finds the file a parameter names.

`setup.py` installs the launch files, parameter files, shipped models and recorded bag into
`share/spec_edge_cloud/` (colcon: under the install prefix the ament index names; pip: under the
interpreter's prefix). A path parameter given relative (`models/target`) is looked up in the
working directory first (a source checkout, a user's own files), then in those share directories,
so `ros2 launch` from any directory finds the shipped files; a miss names every absolute path tried.
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "spec_edge_cloud"


def share_directories() -> list[Path]:
    """The package's share directories: the ament index's (a colcon install, first), then this
    interpreter's prefix (a pip install)."""
    found = []
    try:
        from ament_index_python.packages import get_package_share_directory
        found.append(Path(get_package_share_directory(PACKAGE)))
    except (ImportError, LookupError, OSError):   # no ament index (AMENT_PREFIX_PATH unset), or not in it
        pass
    found.append(Path(sys.prefix) / "share" / PACKAGE)
    return list(dict.fromkeys(found))


def resolve_path(value: str, parameter: str) -> Path:
    """The file or directory `value` names: an absolute path as given; a relative one against the
    working directory, then each share directory. FileNotFoundError names the absolute paths tried."""
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [Path.cwd() / path] + [share / path for share in share_directories()]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"parameter {parameter}: {value!r} not found (tried: "
                            f"{', '.join(str(c) for c in candidates)})")
