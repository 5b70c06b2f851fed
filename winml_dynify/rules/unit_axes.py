"""Size-1 axes that carry a symbol: what an exporter did with them at the exported size.

At batch 1 a transpose that moves the batch axis keeps the memory order, so an exporter may write it as a
``Reshape`` (tf2onnx turns ``[1, 16, 32] -> [16, 1, 32]`` into ``Reshape [16, 1, 32]``). Read as a
reshape at batch > 1 it would interleave the samples: it is rewritten as the ``Transpose`` it was.
A ``Squeeze`` without axes drops every axis that is 1 *at run time*: on an axis that becomes symbolic its
output rank would change with the size, so its axes are made explicit (the static unit axes) when every
consumer reads it the same way with the axis kept; a ``Squeeze`` that names such an axis is a folded size
test (``if frames == 1``) and is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from ..context import Analysis, Binding, Ctx, TInfo, all_nodes
from ..dims import Dim, Origin, Vals, const, factor, is_static, prod
from ..errors import RefusedError
from ..realize import Realizer
from .reshape import solve_reshape, with_parts

READ_AS_RESHAPE = -1  # the Origin("choice") position that tells a transposing Reshape to stay a reshape
TRANSPOSE_FIRST = -2  # the one that tells a Reshape merging a unit axis behind another to transpose first
# consumers whose output does not change when an input keeps a leading unit axis it would have lost
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Equal", "Less", "Greater"}


def transpose_perm(in_shape: list[Dim], static_out: list[int]) -> list[int] | None:
    """The permutation a Reshape performs when, at the exported size, it only reorders axes and moves a
    size-1 axis that carries a symbol past a larger axis; None when it is no such Reshape.

    Both sides must have the same non-unit sizes in the same order and as many unit axes: input unit axes
    map to output unit slots in order. A symbolic unit axis that lands in another gap between the larger
    axes makes the reshape a transpose."""
    big_in = [i for i, d in enumerate(in_shape) if d.s0 != 1]
    big_out = [k for k, v in enumerate(static_out) if v != 1]
    unit_in = [i for i, d in enumerate(in_shape) if d.s0 == 1]
    unit_out = [k for k, v in enumerate(static_out) if v == 1]
    if ([in_shape[i].s0 for i in big_in] != [static_out[k] for k in big_out] or len(unit_in) != len(unit_out)
            or all(in_shape[i].static for i in unit_in)):
        return None
    perm = [0] * len(static_out)
    for i, k in zip(big_in + unit_in, big_out + unit_out, strict=True):
        perm[k] = i

    moved = any(not in_shape[i].static and _gap(i, big_in) != _gap(k, big_out)
                for i, k in zip(unit_in, unit_out, strict=True))
    return perm if moved else None


def _big(shape: list[int]) -> list[int]:
    return [k for k, v in enumerate(shape) if v != 1]


def _gap(pos: int, big: list[int]) -> int:
    return sum(1 for b in big if b < pos)


def merged_behind(in_shape: list[Dim], static_out: list[int]) -> tuple[int, int] | None:
    """(unit axis, axis before it) when the Reshape drops a size-1 input axis carrying a symbol behind a
    larger axis (``[seq, 1, h] -> [seq, h]`` at batch 1); None when it does not. At the exported size a
    flatten of ``[seq, batch]`` and a transpose to ``[batch, seq]`` then a flatten give the same bytes."""
    big_in, big_out = _big([d.s0 for d in in_shape]), _big(static_out)
    if [in_shape[i].s0 for i in big_in] != [static_out[k] for k in big_out]:
        return None
    unit_gaps = {_gap(k, big_out) for k, v in enumerate(static_out) if v == 1}
    for i, d in enumerate(in_shape):
        g = _gap(i, big_in)
        if d.s0 == 1 and not d.static and 0 < g < len(big_in) and g not in unit_gaps:
            return i, big_in[g - 1]
    return None


def _split_first(ctx: Ctx, in_shape: list[Dim], static_out: list[int]) -> None:
    """A Reshape that gives a unit axis back *before* a dim an earlier Reshape merged a symbolic unit axis
    behind: that earlier Reshape was a transpose then a flatten (tf2onnx's Tensordot after a time-major
    RNN), so it is bound to transpose first. Inside a body that is refused."""
    big_in, big_out = _big([d.s0 for d in in_shape]), _big(static_out)
    if [in_shape[i].s0 for i in big_in] != [static_out[k] for k in big_out]:
        return
    unit_gaps = {_gap(k, big_out) for k, v in enumerate(static_out) if v == 1}
    for g, i in enumerate(big_in):
        earlier = ctx.merged.get(in_shape[i].vals)
        if earlier is None or g not in unit_gaps:
            continue
        if any(n.name == earlier for n in ctx.graph.node):
            ctx.bind(Origin("choice", earlier, 1, TRANSPOSE_FIRST), const(1))
        else:
            ctx.conflict(f"it splits {ctx.name(in_shape[i].vals)} with the unit axis first, but '{earlier}' merged "
                         "that unit axis behind the other one inside a body: at the exported size that was a "
                         "transpose then a flatten, which cannot be rebuilt there")


def _moved(rank: int, unit: int, before: int) -> list[int]:
    """The permutation that puts axis ``unit`` just before axis ``before``."""
    perm = [k for k in range(rank) if k != unit]
    perm.insert(perm.index(before), unit)
    return perm


def reshape_as_transpose(ctx: Ctx, node: onnx.NodeProto, x: TInfo, static_out: list[int] | None,
                         entries: list[Dim]) -> TInfo | None:
    """A Reshape that is a transpose at the exported size: recorded as an edit, its output transposed.
    A symbolic unit axis merged behind a larger one is remembered; when a later Reshape splits it back
    first, this one transposes its input first (an edit) and reshapes that. None: an ordinary Reshape."""
    if static_out is None:
        return None
    _split_first(ctx, x.shape, static_out)
    behind = merged_behind(x.shape, static_out)
    if behind is not None and TRANSPOSE_FIRST in ctx.bindings_of(node.name):
        perm = _moved(len(x.shape), *behind)
        ctx.edits[node.name] = ("transpose-first", perm)
        moved = [x.shape[p] for p in perm]
        out = solve_reshape(ctx, node, moved, static_out, entries)
        if out is None:
            return TInfo(None, None, None, x.dtype)
        ctx.shape_sites[(node.name, 1)] = [d.vals for d in out]
        return TInfo(with_parts(moved, out), None, None, x.dtype)
    if behind is not None:
        unit, before = behind
        ctx.merged[prod([x.shape[before].vals, x.shape[unit].vals])] = node.name
    if READ_AS_RESHAPE in ctx.bindings_of(node.name):
        return None
    perm = transpose_perm(x.shape, static_out)
    if perm is None:
        return None
    ctx.edits[node.name] = ("transpose", perm)
    return TInfo([x.shape[p] for p in perm], None, None, x.dtype)
def implicit_squeeze(ctx: Ctx, node: onnx.NodeProto, x: TInfo) -> list[int]:
    """Axes of a Squeeze without axes: the static unit axes. Symbolic axes are kept (an edit makes the axes
    explicit); one that is 1 at export only when every consumer reads the output the same way with it."""
    static = [k for k, d in enumerate(x.shape) if d.s0 == 1 and d.static]
    symbolic = [k for k, d in enumerate(x.shape) if d.s0 == 1 and not d.static]
    if all(d.static for d in x.shape):
        return static
    ctx.edits[node.name] = ("squeeze-axes", static)  # a symbol may be 1 at run time: never squeeze it
    if not symbolic:
        return static
    bad = [n for n, k in ctx.consumers.get(node.output[0], [])
           if not _rank_blind(ctx, n, k, len(x.shape))]
    if bad:
        ctx.conflict(f"Squeeze without axes drops axis {symbolic[0]} ({ctx.name(x.shape[symbolic[0]].vals)}, 1 at "
                     f"export); at other sizes it would keep it, and '{bad[0].name}' ({bad[0].op_type}) would "
                     "see another rank")
    return static


def _rank_blind(ctx: Ctx, node: onnx.NodeProto, k: int, rank: int) -> bool:
    """True when input ``k`` of ``node`` may keep a leading unit axis without changing the output: Gemm's
    bias, or a broadcasting op whose other inputs have at least that rank."""
    if node.op_type == "Gemm" and k == 2:
        return True
    if node.op_type not in _ELEMENTWISE:
        return False
    others = [ctx.info(i) for j, i in enumerate(node.input) if j != k and i]
    return all(o is not None and o.shape is not None and len(o.shape) >= rank for o in others)


def refuse_explicit(ctx: Ctx, axis: int, d: Dim) -> None:
    """A Squeeze that names an axis becoming symbolic: the exporter saw it as 1 (a folded size test)."""
    ctx.conflict(f"Squeeze of axis {axis}, which is 1 at export but follows {ctx.name(d.vals)}: an exporter "
                 "folded a size test (squeeze only when it is 1) into it, and at other sizes the rank would "
                 "change; export with that axis static or without the squeeze")


def apply_edits(an: Analysis, nodes: dict[str, onnx.NodeProto], opset: int, rz: Realizer) -> list[dict]:
    """Rewrite the nodes as the analysis decided (before their shape inputs are rebuilt: a Reshape that
    transposes first reads the transposed tensor). Returns the rewrites done."""
    done = []
    for name, (kind, axes) in an.edits.items():
        node = nodes[name]
        rz.tags = list(node.metadata_props)
        done.append({"rule": kind, "target": name, "detail": _apply(node, kind, axes, opset, an, rz)})
    return done


def _apply(node: onnx.NodeProto, kind: str, axes: list[int], opset: int, an: Analysis, rz: Realizer) -> str:
    if kind == "transpose-first":
        x = an.infos[node.input[0]]
        node.input[0] = rz.node("Transpose", [node.input[0]], perm=axes)
        an.infos[node.input[0]] = TInfo([x.shape[p] for p in axes], None, None, x.dtype)
        return f"a transpose then a reshape at the exported size: now transposes perm={axes} first"
    if kind == "transpose":
        del node.input[1:]
        del node.attribute[:]
        node.op_type = "Transpose"
        node.attribute.append(onnx.helper.make_attribute("perm", axes))
        return f"a transpose at the exported size: now Transpose perm={axes}"
    del node.input[1:]
    del node.attribute[:]
    if not axes:
        node.op_type = "Identity"
        return "squeezed only axes that become symbolic: now Identity"
    if opset >= 13:
        node.input.append(rz.const(np.array(axes, np.int64)))
    else:
        node.attribute.append(onnx.helper.make_attribute("axes", axes))
    return f"squeezes only its static unit axes {axes}"


def settle_reading(an: Analysis, model: onnx.ModelProto,
                   reanalyse: Callable[[dict[tuple[str, int], Binding]], Analysis]) -> Analysis:
    """Reshapes read as transposes are tried as reshapes too (ALiBi's ``[1, heads, seq] -> [heads, 1, seq]``
    is a real ``batch*heads`` reshape): the reading without conflicts wins. When both hold, a reshape
    reading with the same dims would interleave the samples where the transpose keeps them, and one under
    which fewer requested symbols reach the outputs loses a symbol: the transpose wins; otherwise the
    Reshape is refused as ambiguous."""
    moved = [n for n, (kind, _) in an.edits.items() if kind == "transpose"]
    if not moved:
        return an
    outputs = {n.name: n.output[0] for n in all_nodes(model.graph)}
    alt = reanalyse({(outputs[n], READ_AS_RESHAPE): Binding(const(0), n) for n in moved})
    if bool(an.conflicts) != bool(alt.conflicts):
        return alt if an.conflicts else an
    if an.conflicts or _reached(an, model) > _reached(alt, model):
        return an
    for n in moved:
        mine, other = an.infos.get(outputs[n]), alt.infos.get(outputs[n])
        if other is None or other.shape is None or [d.vals for d in mine.shape] != [d.vals for d in other.shape]:
            raise RefusedError(f"node '{n}' (Reshape) is a transpose at the exported size or a reshape to other "
                               "dims, and the graph is consistent either way: it cannot be told which")
    return an


def _reached(an: Analysis, model: onnx.ModelProto) -> set[str]:
    """Requested symbols some graph output dim depends on."""
    out: set[str] = set()
    for vo in model.graph.output:
        info = an.infos.get(vo.name)
        for d in (info.shape or []) if info is not None else []:
            out |= {s.name for s in an.symbols.values() if _depends(d.vals, s.vals, an.symbols)}
    return out


def _depends(vals: Vals, sym: Vals, symbols: dict) -> bool:
    """True when the dim ``vals`` moves with the symbol whose sample values are ``sym`` (tested by moving
    that symbol alone is not possible at fixed points: a dim that is a product or sum of symbols is matched
    by dividing out, else any non-static dim counts as depending on every symbol)."""
    f = factor(vals, symbols)
    if f is not None:
        return any(symbols[name].vals == sym for name in f[1])
    return not is_static(vals)
