"""Parse and validate the requested axes (``--axis NAME:AXIS=SYMBOL`` or a ``dynamic_axes`` dict)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from .errors import UsageError

_AXIS_RE = re.compile(r"^(?P<name>.+):(?P<axis>-?\d+)=(?P<sym>[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class AxisSpec:
    input: str
    axis: int  # normalised, >= 0
    symbol: str


def parse_axis(text: str) -> tuple[str, int, str]:
    m = _AXIS_RE.match(text.strip())
    if not m:
        raise UsageError(f"malformed --axis {text!r}: expected NAME:AXIS=SYMBOL, e.g. input_ids:0=batch")
    return m["name"], int(m["axis"]), m["sym"]


def axes_from_json(path: Path) -> list[tuple[str, int, str]]:
    """Axes from a torch ``dynamic_axes`` dict, or an export config holding one under ``dynamic_axes``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read axes JSON {path}: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("dynamic_axes"), dict):
        data = data["dynamic_axes"]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a dynamic_axes object such as {{\"input_ids\": {{\"0\": \"batch\"}}}}")
    out = []
    for name, axes in data.items():
        if isinstance(axes, dict):
            items = [(int(k), str(v)) for k, v in axes.items()]
        elif isinstance(axes, list):
            items = [(int(k), f"{name}_dim_{int(k)}") for k in axes]
        else:
            raise UsageError(f"{path}: axes of {name!r} must be an object or a list")
        out += [(name, k, s) for k, s in items]
    return out


def resolve(model: onnx.ModelProto, requested: list[tuple[str, int, str]]) -> tuple[list[AxisSpec], dict[str, int]]:
    """Check the requests against the model; return the specs to apply and each symbol's static value.

    A dim that already carries the requested symbol is a no-op; one carrying another symbol is an error.
    Dynamic-axes entries naming graph outputs are checked by the caller after the rewrite.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    statics: dict[str, int] = {}
    specs: list[AxisSpec] = []
    for name, axis, sym in requested:
        if name not in inputs:
            raise UsageError(f"unknown input {name!r}; the model's inputs are: {', '.join(inputs)}")
        dims = inputs[name].type.tensor_type.shape.dim
        if not -len(dims) <= axis < len(dims):
            raise UsageError(f"axis {axis} is out of range for input {name!r} of rank {len(dims)}")
        axis %= len(dims)
        d = dims[axis]
        if d.HasField("dim_param"):
            if d.dim_param != sym:
                raise UsageError(f"{name}:{axis} is already symbolic as {d.dim_param!r}; "
                                 f"use that name instead of {sym!r}")
            continue
        if not d.HasField("dim_value"):
            raise UsageError(f"{name}:{axis} has no static size to make dynamic")
        if sym in statics and statics[sym] != d.dim_value:
            raise UsageError(f"symbol {sym!r} ties dims of different static sizes "
                             f"({statics[sym]} and {d.dim_value} at {name}:{axis})")
        statics[sym] = d.dim_value
        spec = AxisSpec(name, axis, sym)
        if spec not in specs:
            specs.append(spec)
    return specs, statics
