"""Folded mean divisors: ``ReduceSum`` over symbolic axes divided by (or multiplied with the inverse of)
a constant equal to the product of the reduced sizes at export. That structure is a mean; the constant
becomes the run-time element count. A scalar that merely happens to equal a size is left alone: only this
pattern is recognised.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..context import Ctx, TInfo
from ..dims import Vals, is_static, prod
from ..realize import Realizer


def find(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> None:
    """Record ``(node, input) -> (count, mode)`` when ``node`` divides a ReduceSum by its folded count."""
    if node.op_type not in ("Div", "Mul") or len(ins) != 2:
        return
    for k in ((1,) if node.op_type == "Div" else (0, 1)):
        c, other = ins[k], node.input[1 - k]
        if c is None or c.const is None or c.const.size != 1 or c.const.dtype.kind != "f":
            continue
        count = _reduced_count(ctx, other)
        if count is None or is_static(count):
            continue
        value = float(c.const.reshape(-1)[0])
        want = count[0] if node.op_type == "Div" else 1.0 / count[0]
        if np.isclose(value, want, rtol=1e-6):
            ctx.scalar_sites[(node.name, k)] = (count, node.op_type)


def _reduced_count(ctx: Ctx, name: str) -> Vals | None:
    prod_node = ctx.producer.get(name)
    while prod_node is not None and prod_node.op_type == "Cast":
        prod_node = ctx.producer.get(prod_node.input[0])
    if prod_node is None or prod_node.op_type != "ReduceSum":
        return None
    x = ctx.info(prod_node.input[0])
    if x is None or x.shape is None:
        return None
    r = len(x.shape)
    axes = None
    if len(prod_node.input) > 1 and prod_node.input[1]:
        info = ctx.info(prod_node.input[1])
        axes = None if info is None or info.value is None else [v[0] for v in info.value]
    else:
        axes = next((list(a.ints) for a in prod_node.attribute if a.name == "axes"), None)
    if axes is None:
        axes = list(range(r))
    return prod([x.shape[a % r].vals for a in axes])


def realize(count: Vals, mode: str, dtype: int, rz: Realizer) -> str:
    """The run-time element count (Div) or its inverse (Mul), as a scalar of ``dtype``."""
    n = rz.node("Cast", [rz.scalar(count)], to=dtype)
    return n if mode == "Div" else rz.node("Reciprocal", [n])
