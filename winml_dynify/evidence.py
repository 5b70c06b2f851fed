"""What reference exports show: the shape of every tensor at each reference's shape.

A static export of the same model at another shape (``--reference``) bakes the same constants at other
sizes. Where shapes alone leave a reading open, the reference tells which sizes move: a Reshape split
(``[16, 2]`` may be ``[h/2, 2]`` or ``[16, h/16]``) grows in the entry the reference changed
(:func:`~winml_dynify.rules.reshape.solve_reshape`), and a prefix slice ``[0:2]`` of a moving axis is a
fixed count when the reference keeps its length (``torch.roll``'s shift). Tensors are matched by name,
which an exporter derives from the module path, the same at every shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from . import io
from .analysis import analyse
from .context import Evidence
from .dims import const
from .errors import RefusedError, UsageError

__all__ = ["Evidence", "tensor_shapes"]


def tensor_shapes(paths: Sequence[str], graph: onnx.GraphProto) -> Evidence:
    """The shape of every graph input and top-level node output of each reference export. A reference adds
    nothing (it still serves as an oracle) when its inputs are not all static, when the analysis cannot
    follow it, or when a tensor it shares with ``graph`` comes from another op or other computed inputs there:
    exporters that number their nodes (``node_Reshape_362``) name other tensors alike at another shape."""
    computed = {o for n in graph.node if n.op_type != "Constant" for o in n.output} | {vi.name for vi in graph.input}

    def producer(n: onnx.NodeProto) -> tuple[str, tuple[str, ...]]:  # constants' names may be numbered: not compared
        return n.op_type, tuple(i for i in n.input if i in computed)

    made = {o: producer(n) for n in graph.node for o in n.output}
    out: Evidence = []
    for path in paths:
        try:
            model, _ = io.read(path, weights=False)
        except UsageError:
            continue
        if any(o in made and made[o] != producer(n) for n in model.graph.node for o in n.output):
            continue
        weights = {t.name for t in model.graph.initializer}
        inputs = [vi for vi in model.graph.input if vi.name not in weights]
        dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inputs}
        if any(any(v <= 0 for v in ds) for ds in dims.values()):
            continue
        try:
            with io.external_dir(Path(path).parent):
                an = analyse(model, {k: [const(v) for v in ds] for k, ds in dims.items()}, {})
        except (RefusedError, UsageError):
            continue
        names = [*dims, *(o for n in model.graph.node for o in n.output if o)]
        out.append({k: tuple(d.s0 for d in an.infos[k].shape) for k in names
                    if an.infos.get(k) is not None and an.infos[k].shape is not None})
    return out

