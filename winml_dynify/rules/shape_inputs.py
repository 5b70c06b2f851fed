"""Shape-valued inputs (Reshape, Expand, ConstantOfShape, Slice, Range, Tile, Resize).

The analysis records, per consumer, the dims its shape input must produce at every sample point.
A rule first checks whether the current input already produces them (a target computed in the graph,
or a literal that is right at every size); otherwise it builds the cheapest exact replacement:
Reshape ``0`` (copy) and one ``-1``, Expand ``1`` (keep the input dim), Slice to the end, and run-time
dims from the shared ``Shape`` slices for the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from ..context import Analysis, TInfo
from ..dims import N_POINTS, Vals, is_static
from ..ops import INT64_MAX, _reshape_at, _slice_dim
from ..realize import Realizer

Rule = Callable[[onnx.NodeProto, Analysis, list[Vals], Realizer], "dict[int, str] | None"]


def _info(an: Analysis, node: onnx.NodeProto, k: int) -> TInfo | None:
    return an.infos.get(node.input[k]) if len(node.input) > k and node.input[k] else None


def _current(info: TInfo | None, p: int) -> list[int] | None:
    return None if info is None or info.value is None else [v[p] for v in info.value]


def reshape_target(node: onnx.NodeProto, an: Analysis, need: list[Vals], rz: Realizer) -> dict[int, str] | None:
    x, tgt = _info(an, node, 0), _info(an, node, 1)
    allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
    ins = [d.vals for d in x.shape]
    if all(_reshape_at([d[p] for d in ins], _current(tgt, p) or [], allowzero) == [n[p] for n in need]
           for p in range(N_POINTS)):
        return None
    entries: list[int | Vals] = []
    dynamic = []
    for k, n in enumerate(need):
        if is_static(n):
            entries.append(n[0])
        elif k < len(ins) and ins[k] == n and not allowzero:
            entries.append(0)
        else:
            entries.append(n)
            dynamic.append(k)
    if dynamic and -1 not in entries:
        entries[dynamic[-1]] = -1
    return {1: rz.vector(entries)}


def expand_shape(node: onnx.NodeProto, an: Analysis, need: list[Vals], rz: Realizer) -> dict[int, str] | None:
    x, tgt = _info(an, node, 0), _info(an, node, 1)
    ins = [d.vals for d in x.shape]
    off = len(need) - len(ins)

    def result(p: int) -> list[int] | None:
        t = _current(tgt, p)
        if t is None:
            return None
        t = [1] * (len(need) - len(t)) + t
        out = []
        for k, tv in enumerate(t):
            iv = ins[k - off][p] if k >= off else 1
            if tv != 1 and iv != 1 and tv != iv:
                return None
            out.append(iv if tv == 1 else tv)
        return out

    if all(result(p) == [n[p] for n in need] for p in range(N_POINTS)):
        return None
    entries: list[int | Vals] = []
    for k, n in enumerate(need):
        if k >= off and ins[k - off] == n:
            entries.append(1)
        else:
            entries.append(n[0] if is_static(n) else n)
    return {1: rz.vector(entries)}


def _entrywise(idx: int) -> Rule:
    """A shape input whose entries are the needed dims themselves (ConstantOfShape, Tile, Resize sizes)."""

    def rule(node: onnx.NodeProto, an: Analysis, need: list[Vals], rz: Realizer) -> dict[int, str] | None:
        if all(_current(_info(an, node, idx), p) == [n[p] for n in need] for p in range(N_POINTS)):
            return None
        return {idx: rz.vector([n[0] if is_static(n) else n for n in need])}

    return rule


def range_limit(node: onnx.NodeProto, an: Analysis, need: list[Vals], rz: Realizer) -> dict[int, str] | None:
    n = need[0]
    start, delta = _info(an, node, 0), _info(an, node, 2)
    if is_static(n):
        return None
    if start.value is None or delta.value is None or not (is_static(start.value[0]) and is_static(delta.value[0])):
        return None  # computed in the graph already
    s, d = start.value[0][0], delta.value[0][0]
    current = _info(an, node, 1)
    if current is not None and current.value is not None and all(
            -(-(current.value[0][p] - s) // d) == n[p] for p in range(N_POINTS)):
        return None
    lim = rz.scalar(n)
    if d != 1:
        lim = rz.node("Mul", [lim, rz.const(np.array(d, np.int64))])
    if s != 0:
        lim = rz.node("Add", [lim, rz.const(np.array(s, np.int64))])
    return {1: lim}


def slice_bounds(node: onnx.NodeProto, an: Analysis, need: list[Vals], rz: Realizer) -> dict[int, str] | None:
    x, st, en = _info(an, node, 0), _info(an, node, 1), _info(an, node, 2)
    ax_info = _info(an, node, 3)
    r = len(x.shape)
    axes = [v[0] for v in ax_info.value] if ax_info is not None else list(range(len(st.value)))
    steps_info = _info(an, node, 4)
    steps = [v[0] for v in steps_info.value] if steps_info is not None else [1] * len(axes)
    ok = True
    for j, a in enumerate(axes):
        a = a + r if a < 0 else a
        d, s, e = x.shape[a].vals, st.value[j], en.value[j]
        if is_static(d) and is_static(s) and not is_static(e):  # a run-time end within a table
            ok &= tuple(v - s[0] for v in e) == need[a]
            continue
        for p in range(N_POINTS):
            if _slice_dim(d[p], s[p], e[p], steps[j]) != need[a][p]:
                ok = False
    if ok:
        return None
    starts: list[int | Vals | str] = []
    ends: list[int | Vals | str] = []
    for j, a in enumerate(axes):
        a = a + r if a < 0 else a
        s0, n, d = st.value[j][0], need[a], x.shape[a].vals
        if n == tuple(v - max(s0, 0) for v in d) and s0 >= 0:
            starts.append(s0)
            ends.append(INT64_MAX)
        elif s0 < 0 and n == d:
            starts.append(0)
            ends.append(INT64_MAX)
        elif is_static(d) and s0 >= 0:  # a run-time prefix of a fixed table: guarded by its length
            end = rz.at_most(n, d[0] - s0)
            starts.append(s0)
            ends.append(end if s0 == 0 else rz.node("Add", [end, rz.const(np.array([s0], np.int64))]))
        elif s0 == 0:
            starts.append(0)
            ends.append(n)
        else:
            starts.append(s0)
            ends.append(tuple(s0 + v for v in n))
    return {1: rz.vector(starts), 2: rz.vector(ends)}


RULES: dict[str, tuple[int, Rule]] = {
    "Reshape": (1, reshape_target),
    "Expand": (1, expand_shape),
    "ConstantOfShape": (0, _entrywise(0)),
    "Tile": (1, _entrywise(1)),
    "Resize": (3, _entrywise(3)),
    "Range": (1, range_limit),
    "Slice": (2, slice_bounds),
}
