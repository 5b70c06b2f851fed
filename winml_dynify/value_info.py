"""Symbolic ``value_info`` for the rewritten graph, so the optimisers users run next see its shapes.

onnxruntime's load-time fusions (SkipLayerNormalization needs the shapes of both Add inputs) and the
tools that follow an export read ``value_info``. Two sources fill it: onnx's own shape inference (strict,
with data propagation), and the engine's analysis of the rewritten graph, which knows every size that is a
polynomial of the symbols (``seq`` elements of ``Range(0, seq)``, ``past + seq`` keys) exactly and gives
every other size it tracks (``floor(h / 8)``) a name shared by the tensors that have it. Where the two
disagree on a dim, that dim is left unnamed; nothing is written for a tensor neither could shape.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper

from .context import TInfo
from .dims import Symbol, Vals, fit

Dims = list[int | str | None]

_INLINE_LIMIT = 4096  # initializers with more elements are passed to the inferences as typed inputs


def annotate(model: onnx.ModelProto, known: dict[str, tuple[int, Dims]]) -> int:
    """Replace ``model``'s ``value_info`` with the shapes of its intermediates, from onnx's inference and the
    analysis' ``known`` shapes (see :func:`analysed_shapes`); return their count."""
    light = shapes_only(model)
    found = _merge(_onnx_shapes(light), known)
    outer = {vi.name for vi in model.graph.input} | {vi.name for vi in model.graph.output}
    outer |= {t.name for t in model.graph.initializer}
    del model.graph.value_info[:]
    for node in model.graph.node:
        for name in node.output:
            if name and name not in outer and name in found:
                elem, dims = found[name]
                model.graph.value_info.append(helper.make_tensor_value_info(name, elem, dims))
    return len(model.graph.value_info)


def analysed_shapes(infos: dict[str, TInfo], symbols: dict[str, Symbol]) -> dict[str, tuple[int, Dims]]:
    """The analysis' shapes as value_info dims: a number, the polynomial of the symbols (``batch*seq``,
    ``past + seq``), or for a size that is no polynomial (``floor(h / 8)`` after strided convolutions) a
    name of its own, ``size_1``, ``size_2``, ..., the same wherever the analysis found the same size."""
    named: dict[Vals, str] = {}  # each symbolic size once: its polynomial or its own name
    fresh = (f"size_{k}" for k in itertools.count(1) if f"size_{k}" not in symbols)

    def dim(vals: Vals) -> str:
        if vals not in named:
            p = fit(vals, symbols)
            named[vals] = next(fresh) if p is None else str(p)
        return named[vals]

    return {name: (info.dtype, [d.s0 if d.static else dim(d.vals) for d in info.shape])
            for name, info in infos.items() if info.shape is not None}


def shapes_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph without its large weights (typed inputs instead): the inferences need shapes, not bytes."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    names = {vi.name for vi in model.graph.input}
    for t in model.graph.initializer:
        if int(np.prod(t.dims)) > _INLINE_LIMIT:
            if t.name not in names:
                g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    return light


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    """A dim's number or symbol; None for the fresh ``unk__N`` names onnx makes up for unknown dims (each
    inference numbers them from 0, so the same name from two of them would claim a false equality)."""
    if d.HasField("dim_value"):
        return d.dim_value
    return d.dim_param if d.dim_param and not d.dim_param.startswith("unk__") else None


def _shape_map(graph: onnx.GraphProto) -> dict[str, tuple[int, Dims]]:
    out = {}
    for vi in graph.value_info:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and tt.elem_type:
            out[vi.name] = (tt.elem_type, [_dim(d) for d in tt.shape.dim])
    return out


def _onnx_shapes(light: onnx.ModelProto) -> dict[str, tuple[int, Dims]]:
    """onnx shape inference, strict and with data propagation; nothing when it rejects the graph."""
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True)
    except Exception:  # onnx raises InferenceError and friends
        return {}
    return _shape_map(inferred.graph)


def _merge(exact: dict[str, tuple[int, Dims]], symbolic: dict[str, tuple[int, Dims]]) -> dict[str, tuple[int, Dims]]:
    """Per dim: a number or symbol both agree on (or that only one of them knows); unnamed where they differ."""
    out = dict(exact)
    for name, (elem, dims) in symbolic.items():
        if name not in exact:
            out[name] = (elem, dims)
            continue
        elem0, dims0 = exact[name]
        if elem0 != elem or len(dims0) != len(dims):
            out[name] = (elem0, dims0)
            continue
        out[name] = (elem0, [a if b is None or a == b else b if a is None else None
                             for a, b in zip(dims0, dims, strict=True)])
    return out
