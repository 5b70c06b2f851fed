"""Check inputs: shapes from the symbols, values from what the graph implies and the original accepts.

Integer inputs are drawn from the range the graph implies (the metadata's ``value_range``, the rows
of a table they index, the depth of a ``OneHot``, the constants an ``Equal`` compares them with). Float
inputs are drawn from the first distribution on which the original model gives finite outputs
(:func:`settle_float_domain`): elementwise models such as ``Acos``, ``Log`` or ``Sqrt`` only accept part
of the real line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..spec import AxisSpec

# float distributions, widest first: (name, draw(rng, shape))
DISTRIBUTIONS: tuple[tuple[str, Callable[[np.random.Generator, list[int]], np.ndarray]], ...] = (
    ("normal", lambda rng, shape: rng.standard_normal(shape)),
    ("uniform(0.1, 0.9)", lambda rng, shape: rng.uniform(0.1, 0.9, shape)),
    ("uniform(0.4, 0.6)", lambda rng, shape: rng.uniform(0.4, 0.6, shape)),
)
PASS_THROUGH = ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity")


@dataclass
class InputSpec:
    """One graph input as the checks feed it."""

    name: str
    dtype: np.dtype
    static: list[int]
    symbols: dict[int, str]  # axis -> symbol
    low: int = 0
    high: int = 2
    is_mask: bool = False
    is_float: bool = False
    dist: int = 0  # index into DISTRIBUTIONS

    def draw(self, rng: np.random.Generator, shape: list[int]) -> np.ndarray:
        return DISTRIBUTIONS[self.dist][1](rng, shape).astype(self.dtype)


def inputs(model: onnx.ModelProto, specs: list[AxisSpec]) -> list[InputSpec]:
    inits = {t.name for t in model.graph.initializer}
    meta = metadata_ranges(model)
    implied = implied_ranges(model)
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        static = [d.dim_value for d in tt.shape.dim]
        syms = {s.axis: s.symbol for s in specs if s.input == vi.name}
        inp = InputSpec(vi.name, dt, static, syms, is_float=dt.kind == "f")
        inp.is_mask = "mask" in vi.name.lower() and dt.kind in "iub"
        if vi.name in meta:  # winml export writes [low, high)
            inp.low, inp.high = int(meta[vi.name][0]), int(meta[vi.name][1])
        if vi.name in implied:
            lo, hi = implied[vi.name]
            inp.low, inp.high = (max(inp.low, lo), min(inp.high, hi)) if vi.name in meta else (lo, hi)
        if not static and dt.kind in "iu" and vi.name not in meta:
            inp.low = max(inp.low, 1)  # a scalar integer is a step, length or count: 0 can crash a kernel (SIGFPE)
        out.append(inp)
    return out


def metadata_ranges(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    props = {p.key: p.value for p in model.metadata_props}
    try:
        specs = json.loads(props.get("winml.io.inputs", "[]"))
        return {s["name"]: tuple(s["value_range"]) for s in specs if "value_range" in s}
    except (ValueError, TypeError, KeyError):
        return {}


def _const_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: t for t in model.graph.initializer if int(np.prod(t.dims)) <= 4096}
    arrays = {k: numpy_helper.to_array(t) for k, t in out.items()}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            arrays[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return arrays


def implied_ranges(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Integer inputs, followed through value-preserving ops, that index a table (``Gather``: its rows),
    select a class (``OneHot``: its depth) or are compared with constants (``Equal``): the ``[low, high)``
    range to draw them from. A table bounds every valid value (the smallest table wins); without one a
    ``OneHot`` depth does; only then do compared constants give the range (those values and one more)."""
    g = model.graph
    shapes = {t.name: list(t.dims) for t in g.initializer}
    consts = _const_values(model)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
    out: dict[str, tuple[int, int]] = {}
    for vi in g.input:
        if vi.name in shapes or vi.type.tensor_type.elem_type in floats:
            continue
        found: dict[str, list[tuple[int, int]]] = {"Gather": [], "OneHot": [], "Equal": []}
        todo, seen = [vi.name], set()
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            for n in users.get(t, []):
                if n.op_type in PASS_THROUGH and n.input[0] == t:
                    todo.append(n.output[0])
                elif n.op_type == "Gather" and n.input[1] == t and n.input[0] in shapes:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                    found["Gather"].append((0, shapes[n.input[0]][axis]))
                elif n.op_type == "OneHot" and n.input[0] == t and n.input[1] in consts:
                    found["OneHot"].append((0, int(consts[n.input[1]].reshape(-1)[0])))
                elif n.op_type == "Equal":
                    other = n.input[1] if n.input[0] == t else n.input[0]
                    if other in consts and consts[other].size:
                        vals = consts[other].reshape(-1).astype(np.int64)
                        found["Equal"].append((int(vals.min()), int(vals.max()) + 2))
        kind = next((k for k in ("Gather", "OneHot") if found[k]), None)
        if kind is not None:
            out[vi.name] = (0, min(hi for _, hi in found[kind]))
        elif found["Equal"]:
            out[vi.name] = (min(lo for lo, _ in found["Equal"]), max(hi for _, hi in found["Equal"]))
    return out


def make_feeds(specs: list[InputSpec], values: dict[str, int], rng: np.random.Generator,
               first_row: int = 0) -> dict[str, np.ndarray]:
    """Inputs at ``values``. A 2-D mask keeps row 0 whole and pads every later row at a random length;
    ``first_row`` is the index of this batch's row 0 in a larger batch drawn in pieces."""
    feeds = {}
    for inp in specs:
        shape = [values.get(inp.symbols.get(k, ""), d) for k, d in enumerate(inp.static)]
        if inp.is_mask:
            a = np.ones(shape, inp.dtype)
            if len(shape) == 2:
                for r in range(max(0, 1 - first_row), shape[0]):
                    a[r, int(rng.integers(1, shape[1] + 1)):] = 0
        elif inp.is_float:
            a = inp.draw(rng, shape)
        elif inp.dtype == np.bool_:
            a = rng.integers(0, 2, shape).astype(bool)
        else:
            a = rng.integers(inp.low, max(inp.high, inp.low + 1), shape).astype(inp.dtype)
        feeds[inp.name] = a
    return feeds


def settle_float_domain(specs: list[InputSpec], statics: dict[str, int], run, seed: int) -> str:
    """Pick the widest float distribution on which ``run`` (the original model) gives finite float outputs
    at the exported shape; returns its name ("" when the model has no float input). When none does, the
    widest is kept: non-finite outputs are then the model's own."""
    floats = [i for i in specs if i.is_float]
    if not floats:
        return ""
    for k, (name, _) in enumerate(DISTRIBUTIONS):
        for i in floats:
            i.dist = k
        outs = run(make_feeds(specs, statics, np.random.default_rng(seed)))
        if all(np.isfinite(o).all() for o in outs if o.dtype.kind == "f"):
            return name
    for i in floats:
        i.dist = 0
    return DISTRIBUTIONS[0][0]
