"""Parse and validate the requested axes (``--axis NAME:AXIS=SYMBOL`` or a ``dynamic_axes`` dict)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from .errors import UsageError

SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")  # as torch and onnx users write dim names
_AXIS_RE = re.compile(r"^(?P<name>.+):(?P<axis>-?\d+)=(?P<sym>[^=]+)$")


def check_symbol(symbol: object, where: str) -> str:
    """``symbol`` if it is identifier-like (letters, digits, ``_`` and ``.``, not starting with a digit)."""
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        raise UsageError(f"{where}: symbol {symbol!r} is not a dim name (letters, digits, '_' and '.', "
                         "not starting with a digit), e.g. batch or sequence_length")
    return symbol


@dataclass(frozen=True)
class AxisSpec:
    input: str
    axis: int  # normalised, >= 0
    symbol: str


def parse_axis(text: str) -> tuple[str, int, str]:
    m = _AXIS_RE.match(text.strip())
    if not m:
        raise UsageError(f"malformed --axis {text!r}: expected NAME:AXIS=SYMBOL, e.g. input_ids:0=batch")
    return m["name"], int(m["axis"]), check_symbol(m["sym"], f"--axis {text}")


def _read_dynamic_axes(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read axes JSON {path}: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("dynamic_axes"), dict):
        data = data["dynamic_axes"]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a dynamic_axes object such as {{\"input_ids\": {{\"0\": \"batch\"}}}}")
    return data


def _dynamic_axes_entries(path: Path) -> list[tuple[str, int, str, bool]]:
    """``(name, axis, symbol, named)`` per entry; ``named`` is False for the list form (generated symbol)."""
    out = []
    for name, axes in _read_dynamic_axes(path).items():
        try:
            if isinstance(axes, dict):
                items = [(int(k), check_symbol(v, f"{path}: {name}:{k}"), True) for k, v in axes.items()]
            elif isinstance(axes, list):
                items = [(int(k), f"{name}_dim_{int(k)}", False) for k in axes]
            else:
                raise UsageError(f"{path}: axes of {name!r} must be an object or a list")
        except (TypeError, ValueError):
            raise UsageError(f"{path}: axes of {name!r} must be integers, got {axes!r}") from None
        out += [(name, k, s, named) for k, s, named in items]
    return out


def axes_from_json(path: Path) -> list[tuple[str, int, str]]:
    """Axes from a torch ``dynamic_axes`` dict, or an export config holding one under ``dynamic_axes``."""
    return [(name, k, s) for name, k, s, _ in _dynamic_axes_entries(path)]


@dataclass(frozen=True)
class OutputAxis:
    """A graph-output dim a ``dynamic_axes`` dict declares; ``symbol`` None means "any symbolic dim"."""

    output: str
    axis: int
    symbol: str | None


def dynamic_axes_from_json(path: Path, model: onnx.ModelProto) -> tuple[list[tuple[str, int, str]], list[OutputAxis]]:
    """Split a ``dynamic_axes`` JSON into input axis requests and the output dims it declares.

    Output entries are not requests: the tool derives output dims itself. They are checked against what it
    derives (:func:`check_outputs`). A name that is neither an input nor an output is an error.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    outputs = [vo.name for vo in model.graph.output]
    requests: list[tuple[str, int, str]] = []
    declared: list[OutputAxis] = []
    for name, axis, sym, named in _dynamic_axes_entries(path):
        if name in inputs:
            requests.append((name, axis, sym))
        elif name in outputs:
            declared.append(OutputAxis(name, axis, sym if named else None))
        else:
            raise UsageError(f"{path}: {name!r} is neither an input nor an output of the model; inputs: "
                             f"{', '.join(inputs)}; outputs: {', '.join(outputs)}")
    return requests, declared


def graph_output_dims(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """The declared dims of the graph outputs (``[]`` when an output has no shape)."""
    out: dict[str, list[int | str | None]] = {}
    for vo in model.graph.output:
        tt = vo.type.tensor_type
        out[vo.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    return out


def check_outputs(declared: list[OutputAxis], derived: dict[str, list[int | str | None]]) -> None:
    """Each declared output dim must be what the rewrite derives (a usage error otherwise).

    A named entry must match the derived symbol exactly; a list-form entry only needs a symbolic dim.
    """
    problems = []
    for o in declared:
        dims = derived.get(o.output)
        if not dims:
            problems.append(f"{o.output}: its shape could not be derived, so axis {o.axis} cannot be checked")
            continue
        if not -len(dims) <= o.axis < len(dims):
            problems.append(f"{o.output}: axis {o.axis} is out of range for rank {len(dims)}")
            continue
        got = dims[o.axis]
        shown = "?" if got is None else str(got)
        want = o.symbol if o.symbol is not None else "a dynamic dim"
        if isinstance(got, int):
            problems.append(f"{o.output}:{o.axis} is static ({got}) in the rewritten graph, not {want}")
        elif o.symbol is not None and got != o.symbol:
            problems.append(f"{o.output}:{o.axis} is derived as {shown!r}, not {o.symbol!r}")
    if problems:
        derived_text = "; ".join(f"{k}: [{', '.join('?' if d is None else str(d) for d in v)}]"
                                 for k, v in derived.items())
        raise UsageError(f"dynamic_axes disagrees with the derived output dims: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                         + f"; derived outputs are {derived_text}")


def resolve(model: onnx.ModelProto, requested: list[tuple[str, int, str]]) -> tuple[list[AxisSpec], dict[str, int]]:
    """Check the requests against the model; return the specs to apply and each symbol's static value.

    A dim that already carries the requested symbol is a no-op; one carrying another symbol is an error.
    Dynamic-axes entries naming graph outputs are checked by the caller after the rewrite.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    statics: dict[str, int] = {}
    specs: list[AxisSpec] = []
    chosen: dict[tuple[str, int], str] = {}
    for name, axis, sym in requested:
        check_symbol(sym, f"{name}:{axis}")
        if name not in inputs:
            raise UsageError(f"unknown input {name!r}; the model's inputs are: {', '.join(inputs)}")
        dims = inputs[name].type.tensor_type.shape.dim
        if not -len(dims) <= axis < len(dims):
            raise UsageError(f"axis {axis} is out of range for input {name!r} of rank {len(dims)}")
        axis %= len(dims)
        if chosen.setdefault((name, axis), sym) != sym:
            raise UsageError(f"{name}:{axis} is requested as both {chosen[(name, axis)]!r} and {sym!r}")
        d = dims[axis]
        if d.HasField("dim_param"):
            if d.dim_param != sym:
                raise UsageError(f"{name}:{axis} is already symbolic as {d.dim_param!r}; "
                                 f"use that name instead of {sym!r}")
            continue
        if not d.HasField("dim_value"):  # dynamic but unnamed: name it, with a stand-in size
            statics.setdefault(sym, 1 if axis == 0 else 16)
            spec = AxisSpec(name, axis, sym)
            if spec not in specs:
                specs.append(spec)
            continue
        if sym in statics and statics[sym] != d.dim_value:
            raise UsageError(f"symbol {sym!r} ties dims of different static sizes "
                             f"({statics[sym]} and {d.dim_value} at {name}:{axis})")
        statics[sym] = d.dim_value
        spec = AxisSpec(name, axis, sym)
        if spec not in specs:
            specs.append(spec)
    return specs, statics


def carried_axes(model: onnx.ModelProto, statics: dict[str, int]) -> tuple[list[AxisSpec], dict[str, int]]:
    """Input dims that are already named symbols: they take part in the rewrite (so constants that depend
    on them are found too) with a stand-in size: the one ``winml.io.inputs`` records, a requested dim tied
    to the same symbol, else 1 on axis 0 and 16 elsewhere."""
    props = {p.key: p.value for p in model.metadata_props}
    try:
        io_shapes = {e["name"]: e.get("shape") for e in json.loads(props.get("winml.io.inputs", "[]"))}
    except (ValueError, TypeError, KeyError):
        io_shapes = {}
    inits = {t.name for t in model.graph.initializer}
    specs, sizes = [], {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.dim_param:
                continue
            shape = io_shapes.get(vi.name) or []
            recorded = shape[k] if k < len(shape) else None
            size = statics.get(d.dim_param) or sizes.get(d.dim_param)
            size = size or (recorded if isinstance(recorded, int) and recorded > 0 else (1 if k == 0 else 16))
            sizes[d.dim_param] = size
            specs.append(AxisSpec(vi.name, k, d.dim_param))
    return specs, sizes
