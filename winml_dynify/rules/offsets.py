"""Folded row offsets in index tensors: the cases where a batch of 1 hides an ``arange(batch)``.

Attention-mask helpers address a flattened ``batch * len`` mask with ``row * len + column``; tracing at
batch 1 folds the row index to a size-1 zero (or folds the whole index). Nothing in the shapes reveals
it, so these rules read the index's structure: a ``Mul(zero constant, run-time length)`` term, a
wholly folded column index, or GatherND ``[row, col]`` pairs whose row component is all zero. They
return bindings of kind ``arange``, ``row-offset`` or ``arange-component`` for the analysis to apply.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..context import SMALL_CONST, Binding, Ctx, Lazy
from ..dims import Origin, Vals


def offset_bindings(ctx: Ctx, consts: dict[str, tuple[Lazy, int]]) -> dict[Origin, Binding]:
    """Folded ``arange(n) * row_length`` offsets into a flattened ``n * row_length`` axis.

    Tracing at n == 1 folds ``arange(batch)`` to a size-1 zero constant; multiplied by a run-time row
    length and added to a column index it addresses a flattened ``batch*len`` axis (how attention-mask
    helpers pick each sample's row). Left as is, every sample would read row 0. When such an index
    feeds a Gather over an axis of size ``sym * len`` with ``sym`` a symbol of static value 1, the zero
    constant's leading axis is bound to ``sym`` as an arange. When an optimiser folded the whole index
    (only the column arange is left, bound to ``len``), its leading size-1 axis is bound as a row offset:
    ``index + arange(sym) * len``.
    """
    out: dict[Origin, Binding] = {}
    for node in ctx.graph.node:
        if node.op_type == "GatherND":
            out.update(_nd_row_bindings(ctx, node, consts))
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        data, idx = ctx.info(node.input[0]), ctx.info(node.input[1])
        if data is None or data.shape is None or idx is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis_dim = data.shape[axis].vals
        terms = _offset_terms(ctx, node.input[1], consts)
        for cname, row in terms:
            arr = consts[cname][0]
            if arr.size != 1 or arr.ndim == 0 or int(arr.array.reshape(-1)[0]) != 0:
                continue
            for sym in ctx.symbols.values():
                if sym.static == 1 and axis_dim == tuple(a * b for a, b in zip(sym.vals, row, strict=True)):
                    out[Origin("axis", cname, 0, 0)] = Binding(sym.vals, node.name, "arange")
                    out.update(_column_bindings(ctx, node.input[1], consts, cname, row, node.name))
        folded = _folded_constant(ctx, node.input[1], consts)
        if terms or folded is None or idx.shape is None or not idx.shape or idx.shape[0].s0 != 1:
            continue
        lead = idx.shape[0]
        if lead.origin is None or lead.origin.name != folded or not lead.static:
            continue
        for d in idx.shape[1:]:
            for sym in ctx.symbols.values():
                if (not (d.static and d.s0 == 1) and sym.static == 1
                        and axis_dim == tuple(a * b for a, b in zip(sym.vals, d.vals, strict=True))):
                    out[lead.origin] = Binding(sym.vals, node.name, "row-offset", d.vals)
    return out


def _nd_row_bindings(ctx: Ctx, node: onnx.NodeProto, consts) -> dict[Origin, Binding]:
    """GatherND with folded ``[row, col]`` index pairs whose row component is a folded ``arange(batch)``
    (all zero, leading axis of size 1) over data whose first axis is a symbol of static value 1."""
    data, idx = ctx.info(node.input[0]), ctx.info(node.input[1])
    cname = _folded_constant(ctx, node.input[1], consts)
    if (cname is None or data is None or data.shape is None or idx is None or idx.shape is None
            or any(a.name == "batch_dims" and a.i for a in node.attribute)):
        return {}
    if consts[cname][0].size > SMALL_CONST:
        return {}
    arr = consts[cname][0].array
    lead = idx.shape[0]
    if arr.ndim < 2 or arr.shape[0] != 1 or np.any(arr[..., 0] != 0) or lead.origin is None or not lead.static:
        return {}
    for sym in ctx.symbols.values():
        if sym.static == 1 and data.shape[0].vals == sym.vals:
            return {lead.origin: Binding(sym.vals, node.name, "arange-component")}
    return {}


def _column_bindings(ctx: Ctx, name: str, consts, offset: str, row: Vals, by: str) -> dict[Origin, Binding]:
    """The column index added to a row offset spans one row: its axis of the row's static length follows it."""
    out: dict[Origin, Binding] = {}
    prod_node = ctx.producer.get(name)
    if prod_node is None or prod_node.op_type != "Add":
        return out
    for i in prod_node.input:
        col = _folded_constant(ctx, i, consts)
        info = ctx.info(col) if col else None
        if col is None or col == offset or info is None or info.shape is None:
            continue
        axes = [d for d in info.shape if d.static and d.s0 == row[0] and d.origin is not None]
        if len(axes) == 1:
            out[axes[0].origin] = Binding(row, by)
    return out


def _folded_constant(ctx: Ctx, name: str, consts) -> str | None:
    """The constant ``name`` is (through Cast/Identity), if any."""
    name = ctx.trace(name, ("Cast", "Identity"))
    return name if name in consts else None


def _offset_terms(ctx: Ctx, name: str, consts) -> list[tuple[str, Vals]]:
    """(zero constant, run-time length) pairs of ``Mul(const, length)`` terms summed into ``name``."""
    prod_node = ctx.producer.get(name)
    if prod_node is None:
        return []
    if prod_node.op_type in ("Add", "Cast", "Identity"):
        return [t for i in prod_node.input for t in _offset_terms(ctx, i, consts)]
    if prod_node.op_type == "Mul" and len(prod_node.input) == 2:
        a, b = prod_node.input
        for c, other in ((a, b), (b, a)):
            info = ctx.info(other)
            if (c in consts and other not in consts and info is not None and info.value is not None
                    and len(info.value) == 1):  # a length read at run time (static when only batch moves)
                return [(c, info.value[0])]
    return []
