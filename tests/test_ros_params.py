"""Node parameters declared from one table (ros/params.py) and the nodes' shared main (ros/spin.py):
descriptors say what each parameter means and takes; over the real parameter services, a start-up
parameter is refused, a runtime one is validated by the node's own check; a bad value at start
ends a node with one FATAL line and exit code 2; the package's Python logging reaches ROS."""
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402

from spec_edge_cloud.decoding.modes import DecodeConfig, setting  # noqa: E402
from spec_edge_cloud.ros.params import BadParameter, Param, declare, field_params  # noqa: E402


@dataclass
class Knobs:
    rate: float = setting(2.0, "how often", (0.5, 10.0))
    names: tuple[str, ...] = setting((), "some names")
    count: int = setting(3, "how many", (1, None))


TABLE = {**field_params(Knobs), "model": Param("m", "the model", read_only=True),
         "colour": Param("red", "a colour", choices=("red", "green"))}


def check(values):
    if values["count"] > 5 and values["rate"] > 5.0:
        raise ValueError("count above 5 needs rate <= 5")


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_descriptors_carry_descriptions_ranges_choices_and_read_only(ros):
    node = rclpy.create_node("params_probe")
    values = declare(node, TABLE, check)
    assert values == {"rate": 2.0, "names": [], "count": 3, "model": "m", "colour": "red"}
    d = {name: node.describe_parameter(name) for name in TABLE}
    assert d["rate"].description == "how often" and not d["rate"].read_only
    assert (d["rate"].floating_point_range[0].from_value, d["rate"].floating_point_range[0].to_value) == (0.5, 10.0)
    assert d["count"].integer_range[0].from_value == 1 and d["count"].integer_range[0].to_value == 2**63 - 1
    assert d["names"].type == Parameter.Type.STRING_ARRAY.value
    assert d["model"].read_only and d["colour"].additional_constraints == "one of: red, green"
    node.destroy_node()


def test_decode_config_fields_become_parameters_with_its_ranges():
    table = field_params(DecodeConfig)
    assert set(table) == set(DecodeConfig.defaults())
    assert table["exit_threshold"].range == (0.0, 1.0) and table["gamma"].range == (1, None)
    assert table["exit_layers"].type == Parameter.Type.INTEGER_ARRAY and table["exit_layers"].default == []
    assert table["mode"].description == DecodeConfig.help()["mode"]


def test_decoding_settings_unset_arrays_included_can_be_set_while_running(ros):
    from spec_edge_cloud.ros.params import current
    node = rclpy.create_node("decode_params")
    table = field_params(DecodeConfig)
    declare(node, table, lambda v: DecodeConfig(**v))
    assert current(node, ["exit_layers", "stop"]) == {"exit_layers": [], "stop": []}
    results = node.set_parameters([Parameter("exit_layers", value=[1, 3]), Parameter("stop", value=["reached"]),
                                   Parameter("draft_min_confidence", value=0.2)])
    assert all(r.successful for r in results)
    assert DecodeConfig(**current(node, table)) == DecodeConfig(exit_layers=(1, 3), stop=("reached",),
                                                                draft_min_confidence=0.2)
    refused = node.set_parameters([Parameter("draft_top_p", value=0.0)])[0]   # DecodeConfig's own rule
    assert not refused.successful and "draft_top_p must be above 0" in refused.reason
    node.destroy_node()


def test_start_up_values_are_checked(ros):
    def node_with(**overrides):
        return rclpy.create_node("params_bad", parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    for overrides, message in (({"rate": 20.0}, "rate"), ({"count": "x"}, "count"), ({"colour": "blue"}, "one of"),
                               ({"count": 6, "rate": 6.0}, "count above 5")):
        node = node_with(**overrides)
        with pytest.raises(BadParameter, match=message):
            declare(node, TABLE, check)
        node.destroy_node()


def test_set_over_the_parameter_services_is_refused_or_validated(ros):
    node, client_node = rclpy.create_node("params_target"), rclpy.create_node("params_client")
    declare(node, TABLE, check)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(client_node)
    client = AsyncParameterClient(client_node, "params_target")
    assert client.wait_for_services(10.0)

    def set_one(name, value):
        future = client.set_parameters([Parameter(name, value=value)])
        executor.spin_until_future_complete(future, 10.0)
        return future.result().results[0]

    refused = set_one("model", "other")
    assert not refused.successful and "read-only" in refused.reason
    assert node.get_parameter("model").value == "m"
    assert not set_one("rate", 11.0).successful                     # out of its range
    assert not set_one("colour", "blue").successful                 # not one of its choices
    assert set_one("count", 6).successful and node.get_parameter("count").value == 6
    result = set_one("rate", 6.0)                                   # the node's own check, on the new whole
    assert not result.successful and "count above 5" in result.reason
    assert set_one("rate", 4.0).successful and node.get_parameter("rate").value == 4.0
    executor.shutdown()
    node.destroy_node()
    client_node.destroy_node()


NODE_SCRIPT = textwrap.dedent("""
    import logging, sys
    import rclpy
    from rclpy.node import Node
    from spec_edge_cloud.ros.params import Param, declare
    from spec_edge_cloud.ros.spin import run_node

    class Probe(Node):
        NODE_NAME = "probe_node"
        def __init__(self):
            super().__init__(self.NODE_NAME)
            p = declare(self, {"rate": Param(1.0, "how often", range=(0.5, 2.0))})
            logging.getLogger("spec_edge_cloud.transport.client").info("link up at rate %s", p["rate"])
            logging.getLogger("spec_edge_cloud.decoding.verifier").debug("not shown below INFO")
            self.create_timer(0.2, lambda: logging.getLogger("spec_edge_cloud.decoding.verifier").warning(
                "round 1 verified") or rclpy.shutdown())
        def close(self):
            pass

    run_node(Probe, sys.argv[1:])
""")


def run_probe(*ros_args):
    return subprocess.run([sys.executable, "-c", NODE_SCRIPT, "--ros-args", *ros_args], capture_output=True,
                          text=True, timeout=60)


def test_package_logging_goes_to_the_ros_logger():
    p = run_probe()
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert any("[INFO]" in x and "link up at rate 1.0" in x for x in out.splitlines()), out
    assert any("[WARN]" in x and "[probe_node.decoding.verifier]" in x and "round 1 verified" in x
               for x in out.splitlines()), out
    assert "not shown" not in out


def test_a_bad_parameter_is_one_fatal_line_and_exit_code_2():
    p = run_probe("-p", "rate:=5.0")
    out = p.stdout + p.stderr
    fatal = [x for x in out.splitlines() if "[FATAL]" in x]
    assert p.returncode == 2 and len(fatal) == 1, out
    assert "[probe_node]" in fatal[0] and "rate" in fatal[0] and "Traceback" not in out


@pytest.mark.parametrize("node,args,message", [
    ("draft_node", ["-p", "gamma:=0"], "gamma"),
    ("draft_node", ["-p", "mode:=telepathy", "-p", "draft_model:=/nonexistent"], "unknown mode"),
    ("sim_node", ["-p", "image_size:=4"], "image_size"),
    ("verifier_node", ["-p", "target_dir:=/nonexistent/target"], "/nonexistent/target"),
    ("verifier_node", ["-p", "max_batch:=0"], "max_batch"),
])
def test_each_node_ends_on_a_bad_parameter_with_one_fatal_line(node, args, message):
    p = subprocess.run([sys.executable, "-m", f"spec_edge_cloud.ros.{node}", "--ros-args", *args],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    fatal = [x for x in out.splitlines() if "[FATAL]" in x]
    assert p.returncode == 2 and len(fatal) == 1 and message in fatal[0] and f"[{node}]" in fatal[0], out[-1500:]
    assert "Traceback" not in out, out[-1500:]


def test_a_node_whose_constructor_raised_is_found_to_be_destroyed(ros):
    """run_node destroys the half-built node's participant before it exits on a bad parameter: the
    node is found through the error's traceback although no caller holds it."""
    from rclpy.node import Node
    from spec_edge_cloud.ros.spin import partial_node

    class Broken(Node):
        def __init__(self):
            super().__init__("broken_node", parameter_overrides=[Parameter("rate", value=5.0)])
            declare(self, {"rate": Param(1.0, "how often", range=(0.5, 2.0))})

    with pytest.raises(BadParameter) as caught:
        Broken()
    node = partial_node(caught.value)
    assert isinstance(node, Broken) and node.get_name() == "broken_node"
    node.destroy_node()
    assert partial_node(ValueError("not raised in a node")) is None
