"""ament_python package setup; dependency pins live in requirements/ (see README)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spec_edge_cloud"
NODES = ["camera_node", "draft_node", "command_node", "verifier_node", "sim_node"]

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
