"""Shape handlers for default-domain ops whose inputs must agree in shape with each other, beyond what
onnx's per-node inference checks: a baked constant on one side must follow a symbol on the other."""

from __future__ import annotations

import numpy as np
import onnx

from .context import Ctx, TInfo
from .dims import Origin
from .ops import op

Ins = list[TInfo | None]


@op("ScatterND")
def _scatter_nd(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> list[TInfo | None]:
    """``updates`` has the shape ``indices.shape[:-1] + data.shape[k:]`` (``k`` = the index depth); the
    output has the data's shape. Indices that are the whole meshgrid of the data (a traced
    ``mask[b, h, i, j] = ...``: see :func:`_meshgrid`) overwrite every element: the data's dims are the
    grid's, and a component folded to one zero on a grid axis that follows a symbol is ``arange`` of it."""
    data, idx, upd = ins
    depth = idx.shape[-1]
    if depth.static and len(upd.shape) == len(idx.shape) - 1 + len(data.shape) - depth.s0:
        for u, d in zip(upd.shape, [*idx.shape[:-1], *data.shape[depth.s0:]], strict=True):
            ctx.equate(u, d)
    grid = _meshgrid(ctx, node.input[1], [d.s0 for d in data.shape])
    shape = data.shape
    if grid is not None and [g.s0 for g in idx.shape[:-1]] == [d.s0 for d in data.shape]:
        shape = [ctx.equate(d, g) for d, g in zip(data.shape, idx.shape[:-1], strict=True)]
        for (cname, axis, n), g in zip(grid, idx.shape[:-1], strict=True):
            if n == 1 and not g.static:
                ctx.bind(Origin("axis", cname, axis, 0), g.vals, "arange")
    return [TInfo(shape, None, None, data.dtype)]


def _meshgrid(ctx: Ctx, name: str, dims: list[int]) -> list[tuple[str, int, int]] | None:
    """When the index tensor ``name`` is ``Concat([Unsqueeze(Expand(c_0), -1), ...], -1)`` with each constant
    ``c_k`` equal to ``arange(dims[k])`` along grid axis ``k`` (its axes aligned to the grid's from the
    right) and constant along the others: per component, the constant, its axis along grid axis ``k`` and
    that axis' length. None otherwise."""
    cat = ctx.producer.get(ctx.trace(name, ("Cast", "Identity")))
    rank = len(dims)
    if cat is None or cat.op_type != "Concat" or len(cat.input) != rank or \
            next((a.i for a in cat.attribute if a.name == "axis"), None) not in (-1, rank):
        return None
    out = []
    for k, part in enumerate(cat.input):
        unsq = ctx.producer.get(part)
        if unsq is None or unsq.op_type != "Unsqueeze":
            return None
        cname = ctx.trace(unsq.input[0], ("Expand", "Cast", "Identity"))
        info = ctx.info(cname)
        arr = None if info is None else info.const
        if arr is None:
            return None
        axis = k - (rank - arr.ndim)  # Expand aligns the constant's axes with the grid's from the right
        if not 0 <= axis < arr.ndim or arr.shape[axis] != dims[k]:
            return None
        n = arr.shape[axis]
        line = np.arange(n).reshape([n if a == axis else 1 for a in range(arr.ndim)])
        if not np.array_equal(arr, np.broadcast_to(line, arr.shape)):
            return None
        out.append((cname, axis, n))
    return out


@op("ScatterElements", "Scatter")
def _scatter_elements(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> list[TInfo | None]:
    """``updates`` has the shape of ``indices``; the output has the data's shape."""
    data, idx, upd = ins
    for u, i in zip(upd.shape, idx.shape, strict=True):
        ctx.equate(u, i)
    return [TInfo(data.shape, None, None, data.dtype)]
