"""A ROS install's dependencies: package.xml declares every ROS package and rosdep key the code imports,
and requirements/ros-install.txt (pip, beside an apt ROS) carries every other pin of main.txt and
no ROS or DDS wheel that would shadow the apt install, with numpy below 2 for the apt messages."""
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# imported module -> the package.xml key that provides it on a ROS install
APT_PYTHON = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "zmq": "python3-zmq"}
FROM_ROS = ("opencv-python-headless", "numpy", "pyyaml", "pyzmq")   # in main.txt, given by apt on a ROS install
TEST_ONLY = ("pytest", "pytest-timeout", "setuptools")


def imported_top_level_modules() -> set[str]:
    names = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def pins(name: str) -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements" / name).read_text().splitlines()]
    return {re.split(r"[=<>\[]", ln)[0].lower(): ln for ln in lines if ln}


def test_package_xml_declares_what_the_code_imports():
    xml = (ROOT / "package.xml").read_text()
    declared = set(re.findall(r"<exec_depend>([\w-]+)</exec_depend>", xml))
    imported = imported_top_level_modules()
    ros = {m for m in imported if m.endswith(("_msgs", "_srvs", "_interfaces"))
           or m in ("rclpy", "ament_index_python", "launch", "launch_ros")}
    assert ros and ros <= declared, ros - declared
    assert {APT_PYTHON[m] for m in APT_PYTHON if m in imported} <= declared
    assert {"launch_testing", "python3-pytest", "python3-pytest-timeout"} <= \
        set(re.findall(r"<test_depend>([\w-]+)</test_depend>", xml))


def test_ros_install_requirements_are_main_without_ros_wheels():
    main, ros = pins("main.txt"), pins("ros-install.txt")
    assert not [n for n in ros if n.startswith("ros-") or n.startswith("cyclonedds")], ros
    assert re.fullmatch(r"numpy>=1\.\d+(\.\d+)?,<2", ros["numpy"]), ros["numpy"]
    expected = {n: line for n, line in main.items()
                if not n.startswith(("ros-", "cyclonedds")) and n not in FROM_ROS + TEST_ONLY}
    assert {n: ros[n] for n in ros if n != "numpy"} == expected


def test_every_imported_third_party_module_is_pinned_somewhere():
    """A module the code imports is in the standard library, this package, a ROS package, or pinned."""
    pinned = set(pins("main.txt")) | set(pins("no-deps.txt"))
    module_to_pin = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml", "zmq": "pyzmq",
                     "unitree_sdk2py": "unitree-sdk2py-dimos", "rclpy": "ros-rclpy[fastrtps]"}
    for module in imported_top_level_modules() - set(sys.stdlib_module_names) - {"spec_edge_cloud", "__future__"}:
        if module.endswith(("_msgs", "_srvs", "_interfaces")) or module in ("ament_index_python", "launch", "launch_ros"):
            continue
        name = module_to_pin.get(module, module.replace("_", "-")).lower()
        assert name in pinned or name.split("[")[0] in pinned, f"{module} is imported but not pinned"
