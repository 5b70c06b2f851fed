"""Shape reads of symbolic dims: taken from the one shared source of each symbol.

A traced model reads a size through its own ``Gather(Shape(x), k)`` wherever it needs one (a mask's
length, a position count); the static export folds every such read to a constant. In the rewritten graph a
read whose value is exactly one symbol is the tensor the realizer builds once for all rewrites
(``Gather(Shape(input), axis)``, :meth:`Realizer.scalar` / :meth:`Realizer.dim`): consumers read that
instead, and the model's own ``Shape``/``Gather`` pair is pruned once nothing else reads it. The value is the
one the analysis found at every sample point, so nothing but the node count changes.
"""

from __future__ import annotations

import onnx

from ..context import TInfo, pinned_names
from ..dims import Poly, Symbol, fit
from ..realize import Realizer


def share(graph: onnx.GraphProto, infos: dict[str, TInfo], symbols: dict[str, Symbol], rz: Realizer) -> int:
    """Point the readers of each top-level ``Gather(Shape(x), k)`` that holds one symbol (a 0-D scalar or a
    1-element vector) at the realizer's tensor for it. Returns how many reads were redirected."""
    shapes = {n.output[0] for n in graph.node if n.op_type == "Shape"}
    kept = pinned_names(graph)
    shared: dict[str, str] = {}
    for n in graph.node:
        if n.op_type != "Gather" or n.domain not in ("", "ai.onnx") or n.input[0] not in shapes \
                or n.output[0] in kept:
            continue
        info = infos.get(n.output[0])
        if info is None or info.value is None or info.shape is None or len(info.shape) > 1 or len(info.value) != 1:
            continue
        vals = tuple(info.value[0])
        expr = fit(vals, symbols)
        if expr is None or not any(expr == Poly.symbol(s) for s in expr.symbols):
            continue
        rz.tags = list(n.metadata_props)  # nodes it makes belong where the read was
        shared[n.output[0]] = rz.scalar(vals) if not info.shape else rz.dim(vals)
    for n in graph.node:
        n.input[:] = [shared.get(i, i) for i in n.input]
    return len(shared)
