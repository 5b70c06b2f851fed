"""A Gather of a flattened tensor at its own row-major positions is that tensor with unit axes inserted;
at each row's ArgMax, a GatherND.

Transformers builds its padding mask as ``mask.flatten()[batch_idx * seq + kv_idx]`` (``vmap`` over the
index functions); a static export folds the index to a constant, and the rewritten graph computes it
from two Ranges at every call. When the index is exactly the row-major position of every entry of the
flattened tensor, in order, the Gather returns the tensor itself: the rule reads the index as an affine
function of its own indices, ``c + sum(coef_k * i_k)``, with ``c`` and each ``coef_k`` known at every
sample point of the analysis, and compares it with the row-major strides of the tensor before flattening.
An index that is that position for all axes but the last, plus an ArgMax over the last (which stays in
its row), picks one row entry per leading index: ``h[arange(b), ids.argmax(-1)]``, a GatherND.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..context import TInfo, constant_names, pinned_names
from ..dims import N_POINTS, Vals
from ..realize import at_opset

Affine = tuple[Vals, list[Vals]]  # (offset, per-axis coefficient) at every sample point
_ZERO = (0,) * N_POINTS
_UNIT = (1,) * N_POINTS
_INTEGER = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
_ORDER_KEEPING = {"Reshape", "Unsqueeze", "Squeeze", "Flatten"}


def _dims(info: TInfo | None) -> list[Vals] | None:
    return None if info is None or info.shape is None else [tuple(d.vals) for d in info.shape]


def _scalar(info: TInfo | None) -> Vals | None:
    """The one entry of a small integer tensor at every point."""
    if info is None or info.value is None or len(info.value) != 1:
        return None
    v = info.value[0]
    return tuple(int(x) for x in v) if all(float(x).is_integer() for x in v) else None


def _add(a: Vals, b: Vals, sign: int = 1) -> Vals:
    return tuple(x + sign * y for x, y in zip(a, b, strict=True))


def _mul(a: Vals, b: Vals) -> Vals:
    return tuple(x * y for x, y in zip(a, b, strict=True))


def _aligned(aff: Affine, dims: list[Vals], rank: int) -> list[Vals]:
    """``aff``'s coefficients right-aligned to ``rank`` axes; unit axes (index always 0) count as 0."""
    coefs = [c if d != _UNIT else _ZERO for c, d in zip(aff[1], dims, strict=True)]
    return [_ZERO] * (rank - len(coefs)) + coefs


def affine(name: str, producer: dict[str, onnx.NodeProto], infos: dict[str, TInfo], memo: dict) -> Affine | None:
    """The integer tensor ``name`` as an affine function of its indices, or None when it is not one the
    rule can read (Range, a scalar, unit-axis moves, Cast, Expand, Add, Sub, Mul by a scalar)."""
    if name in memo:
        return memo[name]
    memo[name] = None
    info, dims = infos.get(name), _dims(infos.get(name))
    if info is None or dims is None or info.dtype not in _INTEGER:
        return None
    out: Affine | None = None
    s = _scalar(info)
    n = producer.get(name)
    if s is not None:
        out = (s, [_ZERO] * len(dims))
    elif n is not None and n.domain in ("", "ai.onnx"):
        parts = [affine(i, producer, infos, memo) if i else None for i in n.input]
        op = n.op_type
        if op == "Range" and len(dims) == 1:
            start, delta = _scalar(infos.get(n.input[0])), _scalar(infos.get(n.input[2]))
            out = None if start is None or delta is None else (start, [delta])
        elif op in ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze") and parts[0] is not None:
            src = _dims(infos.get(n.input[0]))
            if [d for d in src if d != _UNIT] == [d for d in dims if d != _UNIT]:
                coefs = iter(c for c, d in zip(parts[0][1], src, strict=True) if d != _UNIT)
                out = (parts[0][0], [next(coefs) if d != _UNIT else _ZERO for d in dims])
        elif op == "Expand" and parts[0] is not None:
            out = (parts[0][0], _aligned(parts[0], _dims(infos.get(n.input[0])), len(dims)))
        elif op in ("Add", "Sub") and parts[0] is not None and parts[1] is not None:
            sign = 1 if op == "Add" else -1
            a = _aligned(parts[0], _dims(infos.get(n.input[0])), len(dims))
            b = _aligned(parts[1], _dims(infos.get(n.input[1])), len(dims))
            out = (_add(parts[0][0], parts[1][0], sign), [_add(x, y, sign) for x, y in zip(a, b, strict=True)])
        elif op == "Mul" and parts[0] is not None and parts[1] is not None:
            scalars = [k for k in (0, 1) if not any(c != _ZERO for c in parts[k][1])]
            if scalars:
                k = scalars[0]
                o = parts[1 - k]
                factor = parts[k][0]
                coefs = _aligned(o, _dims(infos.get(n.input[1 - k])), len(dims))
                out = (_mul(o[0], factor), [_mul(c, factor) for c in coefs])
    memo[name] = out
    return out


def _row_major(x: list[Vals], index: list[Vals], aff: Affine) -> bool:
    """Whether ``aff`` over axes ``index`` is the row-major position of every entry of a tensor of dims
    ``x``, in order (unit axes of either side aside)."""
    if aff[0] != _ZERO:
        return False
    own = [d for d in x if d != _UNIT]
    axes = [k for k, d in enumerate(index) if d != _UNIT]
    if [index[k] for k in axes] != own:
        return False
    stride = _UNIT
    for k in reversed(axes):
        if aff[1][k] != stride:
            return False
        stride = _mul(stride, index[k])
    return True


def simplify(graph: onnx.GraphProto, infos: dict[str, TInfo], opset: int) -> int:
    """Replace each top-level ``Gather(flat, index)`` whose ``flat`` is a row-major reshape of some ``x``
    (all entries on axis 0) and whose index is the row-major position of every entry of ``x`` by
    ``x`` with unit axes inserted, under the Gather's output name. When the Gather's one reader only
    moves unit axes too (a Reshape, Unsqueeze, Squeeze or Flatten whose output is also ``x`` with unit
    axes inserted), that reader is the one replaced, and the Gather is left for pruning. Returns how many."""
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    pinned = pinned_names(graph)
    consts = constant_names(graph)
    memo: dict = {}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for n in graph.node:
        if n.op_type != "Gather" or n.domain not in ("", "ai.onnx") or n.input[1] in consts or \
                any(a.name == "axis" and a.i != 0 for a in n.attribute) or n.input[0] not in producer:
            continue
        flat_node = producer[n.input[0]]
        if flat_node.op_type not in ("Flatten", "Reshape") or flat_node.domain not in ("", "ai.onnx"):
            continue
        x, flat, index, out = (_dims(infos.get(t)) for t in (flat_node.input[0], *n.input, n.output[0]))
        if None in (x, flat, index, out) or not x:
            continue
        if opset >= 12:
            pick = _row_pick(n.input[1], x, flat, index, producer, infos, memo)
            if pick is not None:
                replaced[id(n)] = _gather_nd(flat_node.input[0], pick, len(index), n, graph, opset)
                continue
        if any(d != _UNIT for d in flat[1:]) or flat[0] != tuple(math.prod(v) for v in zip(*x, strict=True)):
            continue
        aff = affine(n.input[1], producer, infos, memo)
        added = _inserted(x, out)
        if aff is None or added is None or not _row_major(x, index, aff):
            continue
        node, added = _unit_axes_reader(n, x, readers, pinned, infos) or (n, added)
        replaced[id(node)] = [_unsqueeze(flat_node.input[0], added, node, graph, opset)]
    if replaced:
        nodes = [m for n in graph.node for m in replaced.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(nodes)
    return len(replaced)


def _row_pick(name: str, x: list[Vals], flat: list[Vals], index: list[Vals], producer: dict[str, onnx.NodeProto],
              infos: dict[str, TInfo], memo: dict) -> str | None:
    """For a Gather of ``flat`` (``x`` with its first ``k`` axes merged) at ``name``: the tensor ``p`` of
    an index ``row-major position of (i_0 .. i_{k-2}) * x[k-1] + p[i_0 .. i_{k-2}]`` whose ``p`` is an
    ArgMax/ArgMin over an axis of ``x[k-1]`` entries (so inside the row), or None. That Gather picks
    ``x[i_0, .., i_{k-2}, p[i_0, .., i_{k-2}]]``: CLIP's end-of-text pooling, the last-token pick of
    transformers' sequence classifiers (``h[arange(b), last_non_pad]``)."""
    k = len(index) + 1
    n = producer.get(name)
    if n is None or n.op_type != "Add" or len(x) < k or flat[1:] != x[k:] or \
            flat[0] != tuple(math.prod(v) for v in zip(*x[:k], strict=True)) or index != x[:k - 1]:
        return None
    for a, p in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
        aff = affine(a, producer, infos, memo)
        if aff is None or aff[0] != _ZERO or _dims(infos.get(p)) != index or not _in_row(p, x[k - 1], producer, infos):
            continue
        coefs = _aligned(aff, _dims(infos.get(a)), len(index))
        strides = [tuple(math.prod(v) for v in zip(*x[j + 1:k], strict=True)) for j in range(k - 1)]
        if coefs == strides:
            return p
    return None


def _in_row(name: str, size: Vals, producer: dict[str, onnx.NodeProto], infos: dict[str, TInfo]) -> bool:
    """Whether ``name`` is an ArgMax/ArgMin (through Casts to integers) without kept dims over an axis of
    ``size`` entries: every value lies in ``[0, size)``."""
    n = producer.get(name)
    while n is not None and n.op_type == "Cast" and infos.get(n.input[0]) is not None and \
            infos[n.input[0]].dtype in _INTEGER:
        n = producer.get(n.input[0])
    if n is None or n.op_type not in ("ArgMax", "ArgMin") or n.domain not in ("", "ai.onnx"):
        return False
    attrs = {a.name: a.i for a in n.attribute}
    src = _dims(infos.get(n.input[0]))
    if src is None or attrs.get("keepdims", 1) != 0:
        return False
    return src[attrs.get("axis", 0) % len(src)] == size


def _gather_nd(x: str, pick: str, batch: int, gather: onnx.NodeProto, graph: onnx.GraphProto,
               opset: int) -> list[onnx.NodeProto]:
    """``GatherND(x, pick[..., None], batch_dims=batch)`` under the name of ``gather``'s output, with its
    tags: the Unsqueeze and the GatherND, in order."""
    out = gather.output[0]

    def const(arr: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(arr, f"{out}/axes"))
        return f"{out}/axes"

    op, ins, attrs = at_opset("Unsqueeze", [pick], {"axes": [batch]}, opset, const)[0]
    index = f"{out}/index"
    unsqueeze = helper.make_node(op, ins, [index], name=f"{gather.name}/index", **attrs)
    node = helper.make_node("GatherND", [x, index], [out], name=gather.name, batch_dims=batch)
    for m in (unsqueeze, node):
        m.metadata_props.extend(gather.metadata_props)
    return [unsqueeze, node]


def _unit_axes_reader(gather: onnx.NodeProto, x: list[Vals], readers: dict[str, list[onnx.NodeProto]],
                      pinned: set[str], infos: dict[str, TInfo]) -> tuple[onnx.NodeProto, list[int]] | None:
    """The Gather's only reader and the unit axes its output inserts into ``x``, when that reader keeps
    the order of the elements and its output is ``x`` with unit axes inserted."""
    users = readers.get(gather.output[0], [])
    if gather.output[0] in pinned or len(users) != 1 or users[0].op_type not in _ORDER_KEEPING or \
            users[0].domain not in ("", "ai.onnx") or users[0].input[0] != gather.output[0]:
        return None
    out = _dims(infos.get(users[0].output[0]))
    added = None if out is None else _inserted(x, out)
    return None if added is None else (users[0], added)


def _inserted(src: list[Vals], dst: list[Vals]) -> list[int] | None:
    """The axes of ``dst`` that are unit axes inserted into ``src`` (each axis of ``src`` matched, in order,
    to the first equal axis of ``dst`` left), or None when ``dst`` is no such extension of ``src``. Unit
    axes of ``src`` are kept, never squeezed: a later rewrite may make one of them a symbol."""
    added, k = [], 0
    for j, d in enumerate(dst):
        if k < len(src) and src[k] == d:
            k += 1
        elif d == _UNIT:
            added.append(j)
        else:
            return None
    return added if k == len(src) else None


def _unsqueeze(x: str, axes: list[int], replaced: onnx.NodeProto, graph: onnx.GraphProto,
               opset: int) -> onnx.NodeProto:
    """``x`` with unit axes ``axes`` inserted (in the opset's form; axes that are an input become an
    initializer of ``graph``), under the name of ``replaced``'s output and with its tags (an Identity when
    there are none)."""
    out = replaced.output[0]

    def const(arr: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(arr, f"{out}/axes"))
        return f"{out}/axes"

    op, ins, attrs = at_opset("Unsqueeze", [x], {"axes": axes}, opset, const)[0] if axes else ("Identity", [x], {})
    node = helper.make_node(op, ins, [out], name=replaced.name, **attrs)
    node.metadata_props.extend(replaced.metadata_props)
    return node
