"""ROS parameters of this package's nodes, declared from one table per node, and how a node starts.

Each node lists its parameters once, as `Param`s (default, description, range, read_only), and
`declare` turns them into parameters with a `ParameterDescriptor`, so `ros2 param describe` tells an
operator what each one means and which values it takes. A start-up-only parameter is `read_only`:
`ros2 param set` on it is refused by ROS itself, never silently ignored. A runtime one is checked by
the node's own validation (a plain-Python config such as `DecodeConfig`) before it is accepted.

Where a node's parameters are the fields of a plain-Python config, `field_params` derives them from
those fields (default, help text, range), so a setting has one name, default and validation.

A node that cannot start with its parameters ends with one FATAL line and exit code 2 (spin.py).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

_INT_LIMIT = 2**63 - 1


class BadParameter(ValueError):
    """A parameter value a node cannot run with; the message names the parameter and why."""


@dataclass(frozen=True)
class Param:
    """One ROS parameter: its default, what it means, and what values it takes.

    range: inclusive (low, high) for numbers, None for an open end; ROS refuses a value outside it.
    choices: the strings a text parameter accepts. read_only: set at start-up only.
    type: for a default ROS cannot type by itself (an empty list), e.g. Parameter.Type.INTEGER_ARRAY."""

    default: Any
    description: str
    read_only: bool = False
    range: tuple[float | None, float | None] | None = None
    choices: tuple[str, ...] | None = None
    type: Parameter.Type | None = None


def field_params(config: type, read_only: bool = False, names: tuple[str, ...] | None = None) -> dict[str, Param]:
    """The parameters of a dataclass's fields (`names`, or all): default, `help` and `range` metadata.

    A tuple field becomes an array parameter (its items typed from the field's annotation)."""
    out = {}
    for f in dataclasses.fields(config):
        if names is not None and f.name not in names:
            continue
        default, kind = f.default, None
        if isinstance(default, tuple):
            kind = Parameter.Type.INTEGER_ARRAY if "int" in str(f.type) else Parameter.Type.STRING_ARRAY
            default = list(default)
        out[f.name] = Param(default, f.metadata["help"], read_only, f.metadata.get("range"),
                            f.metadata.get("choices"), kind)
    return out


def descriptor(name: str, p: Param) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, description=p.description, read_only=p.read_only)
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(p.choices)
    if p.range is not None:
        low, high = p.range
        if isinstance(p.default, bool):
            raise TypeError(f"{name}: a range on a boolean parameter")
        if isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(-_INT_LIMIT if low is None else low),
                                            to_value=int(_INT_LIMIT if high is None else high), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=-math.inf if low is None else float(low),
                                                         to_value=math.inf if high is None else float(high),
                                                         step=0.0)]
    return d


def _problem(name: str, p: Param, value: Any) -> str | None:
    """Why `value` is not one of `p`'s choices, or None (ROS itself checks types and ranges)."""
    if p.choices and value not in p.choices:
        return f"parameter {name} must be one of {', '.join(p.choices)}, got {value!r}"
    return None


def declare(node: Node, table: dict[str, Param], check: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Declare every parameter of `table` on `node` and return their start-up values by name.

    `check(values)` is the node's own validation (raises ValueError); it runs on the start-up values
    (BadParameter if they fail) and on every later `ros2 param set`, which it refuses with its
    message. Unset typed arrays come back as []."""
    values = {}
    for name, p in table.items():
        try:
            value = node.declare_parameter(name, p.default if p.type is None or p.default else p.type,
                                           descriptor(name, p)).value
        except ParameterException as e:
            raise BadParameter(f"parameter {name}: {e}") from None
        values[name] = [] if value is None and p.type is not None else value
        if problem := _problem(name, p, values[name]):
            raise BadParameter(problem)
    _check(check, values)

    def on_set(params: list[Parameter]) -> SetParametersResult:
        changed = {q.name: q.value for q in params if q.name in table}
        for name, value in changed.items():
            if problem := _problem(name, table[name], value):
                return SetParametersResult(successful=False, reason=problem)
        try:
            _check(check, {**current(node, table), **changed})
        except BadParameter as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values


def current(node: Node, names) -> dict[str, Any]:
    """The values of the parameters `names` now (an unset typed array: [])."""
    unset = Parameter("unset", value=[])
    return {name: node.get_parameter_or(name, unset).value for name in names}


def _check(check: Callable[[dict], None] | None, values: dict) -> None:
    if check is None:
        return
    try:
        check(values)
    except (ValueError, TypeError) as e:
        raise BadParameter(str(e)) from None
