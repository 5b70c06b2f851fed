"""Boolean identities: ``And(True, m)`` is ``m``, ``Or(False, m)`` is ``m``.

Transformers starts every attention mask from ``torch.ones((), dtype=bool)`` and ands the mask functions
into it. In a static export both operands are constants and onnxruntime folds the ``And``; once the mask
depends on a symbol the ``And`` runs at every call, as a copy. When one operand is a constant whose every
entry is the identity and whose dims are all 1 (it broadcasts into the other operand without growing it),
the readers of the result read the other operand instead.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..context import TInfo, pinned_names

_IDENTITY = {"And": True, "Or": False}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The values of the top-level graph's small initializers and Constant nodes, and of its
    ConstantOfShape nodes of such a constant shape (their fill, at that shape)."""
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if int(np.prod(t.dims)) <= 8}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value" and \
                int(np.prod(n.attribute[0].t.dims)) <= 8:
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    for n in graph.node:
        shape = out.get(n.input[0]) if n.op_type == "ConstantOfShape" and n.input else None
        if shape is not None and shape.size <= 8:
            value = next((numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value"),
                         np.zeros(1, np.float32))
            out[n.output[0]] = np.full([int(d) for d in shape.reshape(-1)], value.reshape(-1)[0])
    return out


def drop(graph: onnx.GraphProto, infos: dict[str, TInfo]) -> int:
    """Rewire the readers of each top-level ``And``/``Or`` with an identity operand to its other operand
    (whose rank the analysis knows); graph outputs and names a body reads keep their producers. The
    dropped nodes are left for pruning. Returns how many."""
    consts = _constants(graph)
    pinned = pinned_names(graph)
    to: dict[str, str] = {}
    for n in graph.node:
        if n.op_type not in _IDENTITY or n.domain not in ("", "ai.onnx") or n.output[0] in pinned:
            continue
        for k in (0, 1):
            c, other = consts.get(n.input[k]), n.input[1 - k]
            info = infos.get(other)
            if c is None or c.size != 1 or other in consts or info is None or info.shape is None:
                continue
            if c.dtype == np.bool_ and bool(c.reshape(-1)[0]) == _IDENTITY[n.op_type] and c.ndim <= len(info.shape):
                to[n.output[0]] = to.get(other, other)
                break
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i in to:
                n.input[k] = to[i]
    return len(to)
