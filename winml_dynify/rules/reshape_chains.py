"""Chains of Reshapes: one Reshape with a constant target from the chain's start, or none at all.

Transformers builds its padding mask as ``Gather(mask.flatten(), idx).view(-1).view(idx.shape)``: in a
static export the targets are constants and the pair costs two cheap kernels; in the rewritten graph the
second target is ``Shape(idx)`` computed at every call, behind a ``Concat``. ``Reshape``, ``Flatten``,
``Squeeze`` and ``Unsqueeze`` keep the row-major order of the elements, so the end of a chain of them is
its start reshaped to the end's shape. Only chains that end in a Reshape with a computed target change.
The analysis knows both shapes at every sample point: when they are equal the readers of the end read
the start; else, for a chain of two or more, the end becomes one ``Reshape`` of the start with a
constant target when every entry is a number (a static size) or ``0`` (the start's dim at the same
index). The rest of the chain and its shape computation are pruned once nothing else reads them.
"""

from __future__ import annotations

import onnx

from ..context import TInfo, constant_names, pinned_names
from .reshape_targets import add_target

_ORDER_KEEPING = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def _shape(infos: dict[str, TInfo], name: str) -> list[tuple[int, ...]] | None:
    info = infos.get(name)
    return None if info is None or info.shape is None else [tuple(d.vals) for d in info.shape]


def _target(start: list[tuple[int, ...]], end: list[tuple[int, ...]]) -> list[int] | None:
    """The constant Reshape target taking ``start`` to ``end`` with numbers and ``0`` entries only, or None.
    No ``-1``: onnxruntime's symbolic shape inference leaves a ``-1`` over a merged symbolic dim unresolved
    (LeViT's ``[B * 16, 128] -> [-1, 16, 2, 32]``), and its transformer optimizer and quantisation tools
    depend on it. A size that reaches 0 has no ``0`` entry (it would be a copy, not a size)."""
    out: list[int] = []
    for k, v in enumerate(end):
        if min(v) <= 0:
            return None
        if len(set(v)) == 1:
            out.append(v[0])
        elif k < len(start) and start[k] == v:
            out.append(0)
        else:
            return None
    return out


def collapse(graph: onnx.GraphProto, infos: dict[str, TInfo]) -> int:
    """Rewrite each top-level chain that ends in a Reshape with a computed target as described above, from
    the earliest start that allows it. Chains whose end needs no run-time shape are left as exported:
    onnxruntime's transformer optimizer matches its attention-mask pattern on the exporter's
    ``Unsqueeze`` chains. Graph outputs and names a body reads keep their producers. Returns how many
    chain ends changed."""
    kept = pinned_names(graph)
    consts = constant_names(graph)
    taken = consts | {o for n in graph.node for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    to: dict[str, str] = {}
    changed = 0
    for n in graph.node:
        if n.op_type != "Reshape" or n.domain not in ("", "ai.onnx") or n.output[0] in kept or n.input[1] in consts:
            continue
        end = _shape(infos, n.output[0])
        if end is None:
            continue
        chain, cur = [], n.input[0]
        while True:
            chain.append(cur)
            p = producer.get(cur)
            if p is None or p.op_type not in _ORDER_KEEPING or p.domain not in ("", "ai.onnx"):
                break
            cur = p.input[0]
        for depth in range(len(chain) - 1, -1, -1):
            start = _shape(infos, chain[depth])
            if start == end:
                to[n.output[0]] = to.get(chain[depth], chain[depth])
                break
            entries = _target(start, end) if depth and start is not None else None
            if entries is not None:
                name = add_target(graph, entries, f"{n.output[0]}/target", taken)
                n.input[:] = [to.get(chain[depth], chain[depth]), name]
                del n.attribute[:]  # allowzero: the 0 entries are copies
                break
        else:
            continue
        changed += 1
    for n in graph.node:
        n.input[:] = [to.get(i, i) for i in n.input]
    return changed
