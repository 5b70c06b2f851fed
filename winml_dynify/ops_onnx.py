"""Shape handlers for default-domain ops whose inputs must agree in shape with each other, beyond what
onnx's per-node inference checks: a baked constant on one side must follow a symbol on the other."""

from __future__ import annotations

import onnx

from .context import Ctx, TInfo
from .ops import op

Ins = list[TInfo | None]


@op("ScatterND")
def _scatter_nd(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> list[TInfo | None]:
    """``updates`` has the shape ``indices.shape[:-1] + data.shape[k:]`` (``k`` = the index depth); the
    output has the data's shape."""
    data, idx, upd = ins
    depth = idx.shape[-1]
    if depth.static and len(upd.shape) == len(idx.shape) - 1 + len(data.shape) - depth.s0:
        for u, d in zip(upd.shape, [*idx.shape[:-1], *data.shape[depth.s0:]], strict=True):
            ctx.equate(u, d)
    return [TInfo(data.shape, None, None, data.dtype)]


@op("ScatterElements", "Scatter")
def _scatter_elements(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> list[TInfo | None]:
    """``updates`` has the shape of ``indices``; the output has the data's shape."""
    data, idx, upd = ins
    for u, i in zip(upd.shape, idx.shape, strict=True):
        ctx.equate(u, i)
    return [TInfo(data.shape, None, None, data.dtype)]
