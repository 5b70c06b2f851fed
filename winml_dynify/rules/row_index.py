"""Row indices into a flattened ``batch * len`` axis that lost their ``arange(batch) * len`` offset.

Pooling one token per sequence (``hidden[arange(batch), ids.argmax(-1)]``) gathers from the flattened
``batch * len`` axis with ``arange(batch) * len + argmax``. Traced at batch 1 the offset is a zero, and an
optimiser may drop the zero term altogether, leaving ``Gather(flat, ArgMax(...))``: every sample would
read the first sample's row. The structure still tells: an ArgMax over an axis of ``len`` whose leading
axis is a symbol of static size 1 indexes an axis of ``symbol * len``. The offset is put back.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..context import Analysis
from ..dims import Vals
from ..realize import Realizer


def find(an: Analysis, graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str, Vals]]:
    """(Gather, symbol, row length) for every Gather that reads rows picked by an offset-less ArgMax."""
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for node in graph.node:
        if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        data, idx = an.infos.get(node.input[0]), an.infos.get(node.input[1])
        if data is None or idx is None or not data.shape or idx.shape is None or len(idx.shape) != 1:
            continue
        arg = producer.get(node.input[1])
        while arg is not None and arg.op_type in ("Cast", "Identity"):
            arg = producer.get(arg.input[0])
        if arg is None or arg.op_type not in ("ArgMax", "ArgMin"):
            continue
        attrs = {a.name: a.i for a in arg.attribute}
        src = an.infos.get(arg.input[0])
        if src is None or src.shape is None or len(src.shape) != 2 or attrs.get("keepdims", 1) != 0 \
                or attrs.get("axis", 0) not in (1, -1):
            continue
        lead, row = src.shape[0].vals, src.shape[1].vals
        for sym in an.symbols.values():
            if (sym.static == 1 and lead == sym.vals and idx.shape[0].vals == sym.vals
                    and data.shape[0].vals == tuple(a * b for a, b in zip(sym.vals, row, strict=True))):
                out.append((node, sym.name, row))
    return out


def realize(index: str, dtype: int, batch: Vals, row: Vals, rz: Realizer) -> str:
    """``index + arange(batch) * row`` in the index's type."""
    zero, one = rz.const(np.array(0, np.int64)), rz.const(np.array(1, np.int64))
    offsets = rz.node("Mul", [rz.node("Range", [zero, rz.scalar(batch), one]), rz.scalar(row)])
    if dtype != onnx.TensorProto.INT64:
        offsets = rz.node("Cast", [offsets], to=dtype)
    return rz.node("Add", [index, offsets])
