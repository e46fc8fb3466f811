"""ament_python package setup; dependency pins live in requirements/ (see README)."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "spec_edge_cloud"
NODES = ["camera_node", "draft_node", "command_node", "verifier_node", "sim_node"]


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under `folder` into share/<package>/<folder>, sub-folders
    kept (the shipped models and bags: launch defaults and nodes find them there)."""
    entries: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            entries.setdefault(f"share/{PACKAGE}/{path.parent.as_posix()}", []).append(path.as_posix())
    return list(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={PACKAGE: ["profiles/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        *tree("models"),
        *tree("data"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="spec_edge_cloud developers",
    description="Edge-cloud speculative decoding with early exits for a Unitree Go2 VLM.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{PACKAGE.replace('_', '-')}={PACKAGE}.cli:main"]
        + [f"{node}={PACKAGE}.ros.{node}:main" for node in NODES],
    },
)
