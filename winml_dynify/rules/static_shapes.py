"""Shape arithmetic the symbols do not reach: folded to constants in the rewritten graph.

A traced model often reads sizes at run time (``x.shape[2] // 7`` in a Swin window partition). In the static
export onnxruntime folds all of it; once one axis is symbolic, ``Shape`` of that tensor is no longer constant
and onnxruntime folds nothing behind it, although the entries the computation reads are still static.
The analysis knows the value of every small integer tensor at every sample point; an integer result of
shape arithmetic that is the same at every point and whose inputs are each a constant or such a result
(back to a ``Shape`` entry of a static axis) depends on no symbol, and becomes a constant.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..context import TInfo, constant_names, value_dtype

# ops whose output is a pure function of their inputs' values (or, for Shape, of the static dims it reads)
_ARITHMETIC = {"Shape", "Size", "Gather", "Slice", "Squeeze", "Unsqueeze", "Concat", "Cast", "Add", "Sub",
               "Mul", "Div", "Mod", "Neg", "Abs", "Floor", "Ceil", "Max", "Min", "Reshape", "Identity"}
_INTEGER = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def static_values(graph: onnx.GraphProto, infos: dict[str, TInfo]) -> dict[str, np.ndarray]:
    """Outputs of the top-level graph's shape arithmetic that depend on no symbol, with their values; only
    those read by a node that is not itself folded (the rest are pruned with their producers)."""
    consts = constant_names(graph)
    shapes = {n.output[0] for n in graph.node if n.op_type == "Shape"}
    outputs = {o.name for o in graph.output}
    found: dict[str, np.ndarray] = {}
    for n in graph.node:
        if n.op_type not in _ARITHMETIC or n.domain not in ("", "ai.onnx") or len(n.output) != 1 or \
                n.output[0] in outputs:
            continue
        info = infos.get(n.output[0])
        if info is None or info.dtype not in _INTEGER or not _static(info):
            continue
        if n.op_type != "Shape" and not all(  # entries picked from a Shape, or values already static
                i in consts or i in found or (k == 0 and i in shapes and n.op_type in ("Gather", "Slice"))
                for k, i in enumerate(n.input) if i):
            continue
        found[n.output[0]] = np.array([v[0] for v in info.value], value_dtype(info.dtype)).reshape(
            [d.s0 for d in info.shape]).astype(helper.tensor_dtype_to_np_dtype(info.dtype))
    read = {i for n in graph.node if n.output[0] not in found for i in n.input} | {o.name for o in graph.output}
    return {name: v for name, v in found.items() if name in read}


def _static(info: TInfo) -> bool:
    return info.value is not None and info.shape is not None and all(d.static for d in info.shape) and \
        all(len(set(v)) == 1 for v in info.value)


def fold(graph: onnx.GraphProto, infos: dict[str, TInfo]) -> int:
    """Replace each static shape-arithmetic result by an initializer of the same name (its producer is then
    dead and pruned). Returns how many were folded."""
    values = static_values(graph, infos)
    if not values:
        return 0
    keep = [n for n in graph.node if not (len(n.output) == 1 and n.output[0] in values)]
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(onnx.numpy_helper.from_array(v, name) for name, v in values.items())
    return len(values)
