"""The written model must pass ``onnx.checker.check_model(full_check=True)`` whenever the input does."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def _used(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads."""
    names = set()
    for n in graph.node:
        names.update(n.input)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                names |= _used(g)
    return names


def conform(original: onnx.ModelProto, model: onnx.ModelProto) -> None:
    """Repair in place what the rewrite leaves that the checker rejects: a graph input whose initializer
    the rewrite replaced and that nothing reads any more is dropped; below IR 4 every initializer must
    also be a graph input; a graph output whose dims the rewrite could not derive keeps its rank (with
    unknown dims) rather than losing its shape field."""
    g = model.graph
    was_init = {t.name for t in original.graph.initializer}
    inits = {t.name: t for t in g.initializer}
    used = _used(g) | {o.name for o in g.output}
    keep = [vi for vi in g.input if not (vi.name in was_init and vi.name not in inits and vi.name not in used)]
    if len(keep) != len(g.input):
        del g.input[:]
        g.input.extend(keep)
    before = {vo.name: vo.type.tensor_type for vo in original.graph.output}
    for vo in g.output:
        tt, old = vo.type.tensor_type, before.get(vo.name)
        if vo.type.HasField("tensor_type") and not tt.HasField("shape") and old is not None and old.HasField("shape"):
            tt.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in old.shape.dim)  # rank kept, sizes unknown
    if model.ir_version < 4:
        listed = {vi.name for vi in g.input}
        g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for name, t in inits.items() if name not in listed)


def light_copy(model: onnx.ModelProto, limit: int = 4096) -> onnx.ModelProto:
    """``model`` with its large (or external) initializers turned into typed graph inputs: the checker
    needs their types and shapes, not their bytes (and a model over 2 GB cannot be checked in memory)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    names = {vi.name for vi in model.graph.input}
    for t in model.graph.initializer:
        if int(np.prod(t.dims)) <= limit and t.data_location != onnx.TensorProto.EXTERNAL:
            g.initializer.append(t)
        elif t.name not in names:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def checker_problem(model: onnx.ModelProto) -> str:
    """The first line of what ``onnx.checker`` (full check) rejects in ``model``, or "" when it passes."""
    try:
        onnx.checker.check_model(light_copy(model), full_check=True)
    except Exception as e:  # ValidationError, InferenceError and friends
        return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return ""
