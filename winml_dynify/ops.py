"""Per-op propagation: output shapes (and small integer values) at every sample point.

Each handler takes the pass context, the node and its input infos, and returns the output infos. Ops
that carry a shape-valued input (Reshape, Expand, ConstantOfShape, Slice, Range, Tile, Resize) record
in ``ctx.shape_sites`` the entries that input must hold at every point; the rewrite realises them.
Ops without a handler go through onnx's own shape inference once per sample point.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from .context import MAX_VALUE_SIZE, Ctx, TInfo, value_dtype
from .dims import N_POINTS, Dim, Origin, Vals, const, is_static, prod
from .rules import divisor, unit_axes
from .rules.reshape import solve_reshape, with_parts

Handler = Callable[[Ctx, onnx.NodeProto, list[TInfo | None]], list[TInfo | None]]
HANDLERS: dict[tuple[str, str], Handler] = {}
INT64_MAX = 2**63 - 1


def op(*names: str, domain: str = "") -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for n in names:
            HANDLERS[(domain, n)] = fn
        return fn

    return register


# -- helpers ---------------------------------------------------------------------------------------
def _entries(ctx: Ctx, info: TInfo | None, node: onnx.NodeProto, idx: int) -> list[Dim] | None:
    """Entries of a shape-valued input; static ones get an origin at this consumer."""
    if info is None or info.value is None:
        return None
    out = []
    for k, v in enumerate(info.value):
        up = info.origins[k] if info.origins and k < len(info.origins) else None
        out.append(ctx.bound(up or Origin("entry", node.name, idx, k), v) if is_static(v) else Dim(v))
    return out


def _with_value(shape: list[Dim], per_point: list[np.ndarray] | None, dtype: int,
                origins: list[Origin | None] | None = None) -> TInfo:
    value = None
    if per_point is not None and all(d.static for d in shape) and per_point[0].size <= MAX_VALUE_SIZE:
        kind = float if value_dtype(dtype) is np.float64 else int
        flat = [np.asarray(a).reshape(-1) for a in per_point]
        if all(f.size == flat[0].size and np.isfinite(f.astype(np.float64)).all() for f in flat):
            value = [tuple(kind(f[i]) for f in flat) for i in range(flat[0].size)]
    if value is None or origins is None or len(origins) != len(value):
        origins = None
    return TInfo(shape, value, None, dtype, origins)


def _points(infos: list[TInfo | None]) -> list[list[np.ndarray]] | None:
    """Per point, the integer values of every input; None when one is unknown."""
    if any(i is None or i.value is None for i in infos):
        return None
    return [[i.value_at(p) for i in infos] for p in range(N_POINTS)]  # type: ignore[union-attr]


def _axes_arg(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None], pos: int) -> list[int] | None:
    if len(node.input) > pos and node.input[pos]:
        info = ins[pos]
        if info is None or info.value is None:
            return None
        return [v[0] for v in info.value]
    a = ctx.attr("axes")
    return list(a) if a is not None else None


def _broadcast_shapes(ctx: Ctx, shapes: list[list[Dim]]) -> list[Dim]:
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        d = dims[0]
        for e in dims[1:]:
            d = ctx.broadcast(d, e)
        out.append(d)
    return out


# -- elementwise -----------------------------------------------------------------------------------
def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: true division on floats, truncating on integers (a zero divisor leaves no value)."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b != 0)
    return np.trunc(a / np.where(b == 0, 1, b)).astype(np.int64)


_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div,
    "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
    "Max": np.maximum, "Min": np.minimum, "Mod": np.mod, "Pow": np.power,
}
_BOOL_OUT = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Not",
             "IsNaN", "IsInf"}


@op(*_BINARY, "Where", "Sum", "Mean", "PRelu", "BitShift", "BitwiseAnd", "BitwiseOr")
def _elementwise(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    shape = _broadcast_shapes(ctx, [i.shape for i in ins if i is not None and i.shape is not None])
    dtype = onnx.TensorProto.BOOL if node.op_type in _BOOL_OUT else ins[-1].dtype
    pts = _points(ins)
    vals = None
    if pts is not None and node.op_type in _BINARY | {"Where": None}:
        if node.op_type == "Where":
            vals = [np.where(c.astype(bool), x, y) for c, x, y in pts]
        elif len(ins) == 2:
            fn = _BINARY[node.op_type]
            with np.errstate(all="ignore"):
                vals = [np.asarray(fn(a, b)) for a, b in pts]
    divisor.find(ctx, node, ins)
    return [_with_value(shape, vals, dtype)]


_UNARY_VALUE = {"Neg": np.negative, "Abs": np.abs, "Not": np.logical_not, "Identity": lambda a: a,
                "Cast": lambda a: a, "Ceil": np.ceil, "Floor": np.floor, "Round": np.round, "Sign": np.sign,
                "Relu": lambda a: np.maximum(a, 0)}


@op("Neg", "Abs", "Not", "Identity", "Cast", "Ceil", "Floor", "Sign", "Relu", "Sqrt", "Exp", "Log", "Erf",
    "Tanh", "Sigmoid", "Sin", "Cos", "Reciprocal", "Softmax", "LogSoftmax", "Clip", "LeakyRelu", "Elu",
    "Gelu", "HardSigmoid", "HardSwish", "Softplus", "IsNaN", "IsInf", "Dropout", "CumSum", "Trilu",
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "LpNormalization", "Round", "Mish", "Selu", "Celu", "ThresholdedRelu", "Hardmax", "CastLike",
    "RMSNormalization", "Shrink", "Atan", "Asin", "Acos", "Tan", "Sinh", "Cosh", "QuantizeLinear",
    "DequantizeLinear", "Binarizer")
def _unary(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    if x is None:
        return [None]
    dtype = x.dtype
    if node.op_type == "Cast":
        dtype = ctx.attr("to")
    elif node.op_type == "CastLike" and ins[1] is not None:
        dtype = ins[1].dtype
    elif node.op_type in _BOOL_OUT:
        dtype = onnx.TensorProto.BOOL
    vals = None
    fn = _UNARY_VALUE.get(node.op_type)
    if fn is not None and x.value is not None:
        vals = [np.asarray(fn(x.value_at(p))) for p in range(N_POINTS)]
        if node.op_type == "Cast" and dtype == onnx.TensorProto.BOOL:
            vals = [(v != 0).astype(np.int64) for v in vals]
        elif value_dtype(dtype) is np.int64:  # float to integer casts truncate; huge values are not sizes
            vals = (None if any(np.abs(v.astype(np.float64)).max(initial=0) >= 2.0**62 for v in vals)
                    else [np.trunc(v).astype(np.int64) for v in vals])
    keep = x.origins if node.op_type in ("Identity", "Cast", "CastLike") else None
    return [_with_value(x.shape, vals, dtype, keep)]


# -- shape producers -------------------------------------------------------------------------------
@op("Shape")
def _shape(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    if x is None or x.shape is None:
        return [None]
    r = len(x.shape)
    start, end = ctx.attr("start", 0), ctx.attr("end", r)
    start, end = max(0, start + r if start < 0 else start), min(r, end + r if end < 0 else end)
    dims = x.shape[start:end]
    return [TInfo([Dim(const(len(dims)))], [d.vals for d in dims], None, onnx.TensorProto.INT64,
                  [d.origin if d.static else None for d in dims])]


@op("Size")
def _size(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    return [TInfo([], [prod([d.vals for d in x.shape])], None, onnx.TensorProto.INT64)]


def _whole_axis(ctx: Ctx, axis: Dim, idx: TInfo) -> None:
    """A folded index ``arange(n)`` over a symbolic axis of size ``n`` at export picks the whole axis (a
    mask read at every key position): its length follows that axis. Only for an axis that is one symbol: a
    flattened ``batch*seq`` axis is ``seq`` long too at batch 1, and the index may follow either."""
    if idx.const is None or axis.static or axis.s0 < 2:
        return
    p = ctx.fit(axis.vals)
    mono = p.monomial() if p is not None else None
    if mono is None or mono[0] != 1 or list(mono[1].values()) != [1]:
        return
    long = [k for k, d in enumerate(idx.shape) if d.s0 != 1]
    flat = idx.const.reshape(-1)
    if len(long) == 1 and flat.size == axis.s0 and np.array_equal(flat, np.arange(axis.s0)):
        ctx.equate(idx.shape[long[0]], axis)


@op("Gather")
def _gather(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    data, idx = ins
    axis = ctx.attr("axis", 0)
    axis = axis + len(data.shape) if axis < 0 else axis
    _whole_axis(ctx, data.shape[axis], idx)
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
    vals, origins = None, None
    if data.value is not None and idx.value is not None and len(data.shape) == 1:
        vals = []
        for p in range(N_POINTS):
            d, i = data.value_at(p), idx.value_at(p)
            if np.array_equal(d, np.arange(d.shape[0])) and np.all(i >= 0):
                vals.append(i)  # the sizes 0..n of a range check: the size itself (sample points may exceed n)
            elif np.all((i >= -d.shape[0]) & (i < d.shape[0])):
                vals.append(d[np.where(i < 0, i + d.shape[0], i)])
            else:  # a sample point beyond a bounded table: no value
                vals = None
                break
        if data.origins and vals is not None:
            n = len(data.origins)
            origins = [data.origins[(v[0] + n) % n] for v in idx.value]
    return [_with_value(shape, vals, data.dtype, origins)]


@op("GatherND")
def _gather_nd(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    data, idx = ins
    b = ctx.attr("batch_dims", 0)
    for d, i in zip(data.shape[:b], idx.shape[:b], strict=True):
        ctx.equate(d, i)
    depth = idx.shape[-1]
    if not depth.static:
        return [None]
    return [TInfo(idx.shape[:-1] + data.shape[b + depth.s0:], None, None, data.dtype)]


@op("GatherElements")
def _gather_elements(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    """Output takes the index shape; off the gather axis the index may not outgrow the data, so equal
    static sizes are tied (a folded ``expand(batch, -1)`` of the data follows the index's batch)."""
    data, idx = ins
    axis = ctx.attr("axis", 0)
    axis = axis + len(data.shape) if axis < 0 else axis
    for k, (d, i) in enumerate(zip(data.shape, idx.shape, strict=True)):
        if k != axis and d.s0 == i.s0 and d.vals != i.vals:
            ctx.equate(d, i)
    return [TInfo(idx.shape, None, None, data.dtype)]


def concat_shape(ctx: Ctx, parts: list[TInfo], axis: int) -> list[Dim]:
    """The shape of ``parts`` concatenated along ``axis`` (>= 0): that dim the sum of theirs (its terms
    kept), every other one equated across them."""
    shape = []
    for k in range(len(parts[0].shape)):
        if k == axis:
            terms = tuple(p.shape[k] for p in parts)
            shape.append(Dim(tuple(sum(t.vals[i] for t in terms) for i in range(N_POINTS)),
                             terms=terms if len(terms) > 1 else None))
        else:
            d = parts[0].shape[k]
            for p in parts[1:]:
                d = ctx.equate(d, p.shape[k])
            shape.append(d)
    return shape


@op("Concat")
def _concat(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    parts = [i for i in ins if i is not None]
    rank = len(parts[0].shape)
    axis = ctx.attr("axis")
    axis = axis + rank if axis < 0 else axis
    shape = concat_shape(ctx, parts, axis)
    vals, origins = None, None
    pts = _points(parts)
    if pts is not None:
        vals = [np.concatenate([a.reshape(-1) if rank == 1 else a for a in pp], axis=axis) for pp in pts]
        if rank == 1:
            origins = [o for p in parts for o in (p.origins or [None] * len(p.value))]
    return [_with_value(shape, vals, parts[0].dtype, origins)]


@op("Unsqueeze")
def _unsqueeze(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    axes = _axes_arg(ctx, node, ins, 1)
    if axes is None:
        return [None]
    rank = len(x.shape) + len(axes)
    axes = sorted(a + rank if a < 0 else a for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, Dim(const(1)))
    return [TInfo(shape, x.value, None, x.dtype, x.origins)]


@op("Squeeze")
def _squeeze(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    axes = _axes_arg(ctx, node, ins, 1)
    r = len(x.shape)
    if axes is None:
        axes = unit_axes.implicit_squeeze(ctx, node, x)
    axes = [a + r if a < 0 else a for a in axes]
    for a in axes:
        if not x.shape[a].static:
            unit_axes.refuse_explicit(ctx, a, x.shape[a])
    return [TInfo([d for k, d in enumerate(x.shape) if k not in axes], x.value, None, x.dtype, x.origins)]


@op("Flatten")
def _flatten(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    a = ctx.attr("axis", 1)
    a = a + len(x.shape) if a < 0 else a
    shape = [Dim(prod([d.vals for d in x.shape[:a]])), Dim(prod([d.vals for d in x.shape[a:]]))]
    return [TInfo(shape, x.value, None, x.dtype)]


@op("Transpose")
def _transpose(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    perm = ctx.attr("perm") or list(reversed(range(len(x.shape))))
    vals = None if x.value is None else [np.transpose(x.value_at(p), perm) for p in range(N_POINTS)]
    return [_with_value([x.shape[p] for p in perm], vals, x.dtype)]


# -- ops with a shape-valued input -----------------------------------------------------------------
def _site(ctx: Ctx, node: onnx.NodeProto, idx: int, entries: list[Vals]) -> None:
    ctx.shape_sites[(node.name, idx)] = entries


def _reshape_at(in_vals: list[int], target: list[int], allowzero: int) -> list[int] | None:
    out = [in_vals[k] if (t == 0 and not allowzero and k < len(in_vals)) else t for k, t in enumerate(target)]
    total = math.prod(in_vals)
    if out.count(-1) == 1:
        known = math.prod(v for v in out if v != -1)
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out if math.prod(out) == total and -1 not in out else None


@op("Reshape")
def _reshape(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x, tgt = ins
    entries = _entries(ctx, tgt, node, 1)
    if entries is None:
        return [None]
    allowzero = ctx.attr("allowzero", 0)
    if any(not e.static and e.origin is None for e in entries):  # a target computed in the graph
        per = [_reshape_at([d.vals[p] for d in x.shape], [e.vals[p] for e in entries], allowzero)
               for p in range(N_POINTS)]
        if any(o is None for o in per):
            ctx.conflict("its computed target does not fit the input at every size")
            return [None]
        out = [Dim(tuple(per[p][k] for p in range(N_POINTS)), e.origin if e.static and e.s0 > 0 else None)
               for k, e in enumerate(entries)]
    else:
        static_out = _reshape_at([d.s0 for d in x.shape], [e.s0 for e in entries], allowzero)
        moved = unit_axes.reshape_as_transpose(ctx, node, x, static_out, entries)
        if moved is not None:
            return [moved]
        out = solve_reshape(ctx, node, x.shape, static_out, entries)
    if out is None:
        return [None]
    _site(ctx, node, 1, [d.vals for d in out])
    return [TInfo(with_parts(x.shape, out), x.value, None, x.dtype, x.origins)]


@op("Expand")
def _expand(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x, tgt = ins
    entries = _entries(ctx, tgt, node, 1)
    if entries is None:
        return [None]
    rank = max(len(x.shape), len(entries))
    out: list[Dim] = []
    for k in range(rank):
        i = x.shape[k - rank + len(x.shape)] if k - rank + len(x.shape) >= 0 else None
        t = entries[k - rank + len(entries)] if k - rank + len(entries) >= 0 else None
        if t is None:
            out.append(i)
        elif i is None:
            out.append(t)
        elif t.static and t.s0 == 1 and i.static and i.s0 == 1 and i.origin is None and t.origin is not None:
            out.append(t)  # 1 to 1: the target's entry is what can follow a symbol (expand(bsz, ...) at bsz 1)
        elif t.static and t.origin is not None and t.origin not in ctx.bindings and (t.s0 == 1 or t.s0 == i.s0):
            out.append(i)  # the target repeats (or broadcasts to) the input's own dim
        else:
            out.append(ctx.broadcast(i, t))
    _site(ctx, node, 1, [d.vals for d in out])
    return [TInfo(out, None, None, x.dtype)]


@op("ConstantOfShape")
def _constant_of_shape(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    entries = _entries(ctx, ins[0], node, 0)
    if entries is None:
        return [None]
    val = ctx.attr("value")
    fill = onnx.numpy_helper.to_array(val).reshape(-1)[0] if val is not None else np.float32(0)
    dtype = val.data_type if val is not None else onnx.TensorProto.FLOAT
    _site(ctx, node, 0, [d.vals for d in entries])
    vals = None
    if np.asarray(fill).dtype.kind in "iub" and all(d.static for d in entries):
        vals = [np.full([d.s0 for d in entries], int(fill), np.int64)] * N_POINTS
    return [_with_value(entries, vals, dtype)]


def _slice_dim(d: int, start: int, end: int, step: int) -> int:
    return len(range(*slice(start, end, step).indices(d)))


def _anchored(n: int, start: int, end: int, step: int) -> tuple[int, int] | None:
    """Static slice bounds on an axis of static size ``n`` that becomes symbolic, read relative to the
    end they are anchored to: a bound reaching past either end stays there, a negative one counts from
    the end, ``[-n:]`` is the whole axis. A positive bound inside the axis is a fixed count whose meaning
    at other sizes the graph does not tell: None."""
    if step > 0:
        s = 0 if start <= -n else start
        if end >= n:
            return s, INT64_MAX
        return (s, end) if end < 0 and s < n else None
    s = -1 if start >= n - 1 else start
    if end < -n:
        return (s, -INT64_MAX) if s < 0 else None
    return None


def _fixed_count(ctx: Ctx, node: onnx.NodeProto, axis: int, size: int, count: int) -> bool:
    """A slice inside a moving axis whose length the reference exports keep while the axis moves: a fixed
    count (``torch.roll``'s ``[0:shift]``), not a size folded from the axis (:mod:`winml_dynify.evidence`)."""
    seen = [(i, o) for i, o in ctx.seen(node.input[0], node.output[0]) if len(i) > axis and len(o) > axis]
    return any(i[axis] != size for i, _ in seen) and all(o[axis] == count for _, o in seen)


@op("Slice")
def _slice(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    r = len(x.shape)
    starts, ends = ins[1], ins[2]
    if starts is None or ends is None or starts.value is None or ends.value is None:
        return [None]
    axes = _axes_arg(ctx, node, ins, 3) or list(range(len(starts.value)))
    steps = [v[0] for v in ins[4].value] if len(ins) > 4 and ins[4] is not None and ins[4].value else None
    steps = steps or [1] * len(axes)
    shape = list(x.shape)
    sv, ev = starts.value, ends.value
    for j, a in enumerate(axes):
        a = a + r if a < 0 else a
        d = x.shape[a]
        s, e, st = sv[j], ev[j], steps[j]
        if d.static and is_static(s) and not is_static(e) and st == 1 and s[0] >= 0:
            n = tuple(v - s[0] for v in e)  # a run-time end on a fixed table: bounded by its length
            ctx.upper_bound(n, d.s0 - s[0], f"slice of {d.s0} rows at '{node.name}'")
            shape[a] = Dim(n)
            continue
        if not (is_static(s) and is_static(e)):  # computed in the graph: evaluate per point
            shape[a] = Dim(tuple(_slice_dim(d.vals[p], s[p], e[p], st) for p in range(N_POINTS)))
            continue
        s0, e0 = s[0], e[0]
        if not d.static:
            anchored = _anchored(d.s0, s0, e0, st)
            count = _slice_dim(d.s0, s0, e0, st)
            if anchored is None and _fixed_count(ctx, node, a, d.s0, count):
                shape[a] = Dim(const(count))
                ctx.lower_bound(d.vals, max(s0, e0) if st > 0 else s0 + 1, f"slice [{s0}:{e0}] at '{node.name}'")
            elif anchored is None:
                ctx.conflict(f"slice [{s0}:{e0}:{st}] of axis {a}, which is {ctx.name(d.vals)}, is baked (a fixed "
                             f"count or a size folded from the axis: give --reference, a static export at other "
                             f"sizes, to decide)")
            else:
                shape[a] = Dim(tuple(_slice_dim(v, *anchored, st) for v in d.vals))
        elif st == 1 and (s0 == 0 or s0 <= -d.s0) and e0 >= d.s0:
            shape[a] = d  # the whole axis (``[0:]`` or ``[-n:]``): the output follows its input
        elif d.static:
            n = _slice_dim(d.s0, s0, e0, st)
            shape[a] = ctx.bound(Origin("entry", node.name, 2, j), const(n))
            if not shape[a].static:
                if st != 1 or s0 < 0:
                    ctx.conflict(f"slice with start {s0}, step {st} would have to follow "
                                 f"{ctx.name(shape[a].vals)}")
                else:
                    ctx.upper_bound(shape[a].vals, d.s0 - s0, f"slice of {d.s0} rows at '{node.name}'")
    vals = None
    if x.value is not None and all(d.static for d in shape):
        vals = []
        for p in range(N_POINTS):
            index = [slice(None)] * r
            for j, a in enumerate(axes):
                index[a + r if a < 0 else a] = slice(sv[j][p], ev[j][p], steps[j])
            vals.append(x.value_at(p)[tuple(index)])
    ctx.shape_sites[(node.name, 2)] = [d.vals for d in shape]  # the output dims the slice must give
    return [_with_value(shape, vals, x.dtype)]


@op("Range")
def _range(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    s, lim, dl = ins
    if any(i is None or i.value is None for i in ins):
        return [None]
    n = tuple(max(0, math.ceil((lim.value[0][p] - s.value[0][p]) / dl.value[0][p])) for p in range(N_POINTS))
    d = ctx.bound(Origin("entry", node.name, 1, 0), n) if is_static(n) else Dim(n)
    _site(ctx, node, 1, [d.vals])
    vals = None
    if d.static and d.s0 <= MAX_VALUE_SIZE:
        vals = [np.arange(s.value[0][p], lim.value[0][p], dl.value[0][p]) for p in range(N_POINTS)]
    return [_with_value([d], vals, s.dtype)]


def _repeated_before(ctx: Ctx, d: Dim) -> bool:
    """``d`` is a constant's axis, or an earlier Tile's or Expand's count (XCiT's position grid repeated by
    ``h``, then by the batch): a binding on it belongs there."""
    o = d.origin
    return o is not None and (o.kind == "axis" or (o.kind == "entry" and ctx.op_type(o.name) in ("Tile", "Expand")))


@op("Tile")
def _tile(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    """A baked repeat count whose output must follow a symbol (``repeat(batch, 1, 1)`` folded at batch 1)
    is bound through the output dim: the count becomes that dim divided by the input's."""
    x, reps = ins
    if reps is None or reps.value is None:
        return [None]
    out, counts = [], []
    for k, (i, t) in enumerate(zip(x.shape, reps.value, strict=True)):
        times = tuple(a * b for a, b in zip(i.vals, t, strict=True))
        if is_static(t) and t[0] == 1 and i.s0 != 1 and _repeated_before(ctx, i):
            out.append(i)  # not repeated, and read from a constant's axis or an earlier count: a binding belongs there
            counts.append(t)
        elif is_static(t) and i.static:
            d = ctx.bound(Origin("entry", node.name, 1, k), times)
            if any(v % i.s0 for v in d.vals):
                ctx.conflict(f"repeat of {i.s0} cannot give {ctx.name(d.vals)}")
            out.append(d)
            counts.append(tuple(v // i.s0 for v in d.vals))
        else:
            if not is_static(t) and not i.static:
                ctx.conflict("tile of a symbolic axis by a symbolic count")
            out.append(Dim(times))
            counts.append(t)
    _site(ctx, node, 1, counts)
    return [TInfo(out, None, None, x.dtype)]


@op("Split")
def _split(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    r = len(x.shape)
    axis = ctx.attr("axis", 0)
    axis = axis + r if axis < 0 else axis
    sizes = None
    if len(node.input) > 1 and node.input[1]:
        if ins[1] is None or ins[1].value is None:
            return [None] * len(node.output)
        sizes = [v[0] for v in ins[1].value]
    elif ctx.attr("split") is not None:
        sizes = list(ctx.attr("split"))
    d = x.shape[axis]
    n = len(node.output)
    outs = []
    for k in range(n):
        shape = list(x.shape)
        if sizes is None:
            if any(v % n for v in d.vals):
                ctx.conflict(f"even split of {ctx.name(d.vals)} into {n}")
            shape[axis] = Dim(tuple(v // n for v in d.vals))
        elif not d.static:
            ctx.conflict(f"split sizes {sizes} are baked on axis {axis}, which is {ctx.name(d.vals)}")
            shape[axis] = Dim(const(sizes[k]))
        else:
            shape[axis] = Dim(const(sizes[k]))
        outs.append(TInfo(shape, None, None, x.dtype))
    return outs


def _input_size(ctx: Ctx, rank: int, axis: int, size: int) -> Vals | None:
    """The symbolic dim at ``axis`` of the graph inputs of rank ``rank`` whose exported size is ``size``, when
    exactly one does: a baked resize target equal to it is the input's size (``interpolate(x,
    size=image.shape[-2:])`` folded at export)."""
    found = {d.vals for vi in ctx.graph.input if (info := ctx.info(vi.name)) is not None and info.shape
             and len(info.shape) == rank for d in [info.shape[axis]] if not d.static and d.s0 == size}
    return found.pop() if len(found) == 1 else None


@op("Resize", "Upsample")
def _resize(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
        entries = _entries(ctx, ins[3], node, 3)
        if entries is None:
            return [None]
        out = []
        for k, (i, t) in enumerate(zip(x.shape, entries, strict=True)):
            if not i.static and t.static and t.s0 == i.s0:
                out.append(ctx.equate(i, t))
            elif not i.static and t.static and (size := _input_size(ctx, len(x.shape), k, t.s0)) is not None:
                if t.origin is not None:
                    ctx.bind(t.origin, size)
                out.append(Dim(size, t.origin))
            elif not i.static and t.static:
                # a consumer (Add, Concat) may still bind it to the size of another branch: only the
                # last pass's conflicts count
                ctx.conflict(f"resize of {ctx.name(i.vals)} to a baked size {t.s0}: a fixed size or a scale "
                             "factor, the graph does not tell")
                out.append(t)
            else:
                out.append(t)
        _site(ctx, node, 3, [d.vals for d in out])
        return [TInfo(out, None, None, x.dtype)]
    sc = ins[2] if node.op_type == "Resize" else ins[1]
    if sc is None or sc.const is None:
        return [None]
    scales = sc.const.reshape(-1).tolist()
    return [TInfo([Dim(tuple(math.floor(v * s) for v in d.vals)) for d, s in
                   zip(x.shape, scales, strict=True)], None, None, x.dtype)]


@op("Pad")
def _pad(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    r = len(x.shape)
    if len(node.input) > 1:
        if ins[1] is None or ins[1].value is None:
            return [None]
        pads = ins[1].value
    else:
        pads = [const(p) for p in ctx.attr("pads")]
    axes = _axes_arg(ctx, node, ins, 3) or list(range(r))
    shape = list(x.shape)
    for j, a in enumerate(axes):
        b, e = pads[j], pads[j + len(axes)]
        shape[a] = Dim(tuple(shape[a].vals[p] + b[p] + e[p] for p in range(N_POINTS)))
    return [TInfo(shape, None, None, x.dtype)]


# -- linear algebra --------------------------------------------------------------------------------
def _matmul_shape(ctx: Ctx, a: list[Dim], b: list[Dim]) -> list[Dim]:
    a1, b1 = len(a) == 1, len(b) == 1
    a = [Dim(const(1)), *a] if a1 else a
    b = [*b, Dim(const(1))] if b1 else b
    ctx.equate(a[-1], b[-2], contraction=True)
    batch = _broadcast_shapes(ctx, [a[:-2], b[:-2]]) if (len(a) > 2 or len(b) > 2) else []
    out = batch + ([] if a1 else [a[-2]]) + ([] if b1 else [b[-1]])
    return out


@op("MatMul", "MatMulInteger")
def _matmul(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    return [TInfo(_matmul_shape(ctx, ins[0].shape, ins[1].shape), None, None, ins[0].dtype)]


@op("Gemm")
def _gemm(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    a, b = ins[0].shape, ins[1].shape
    m, k1 = (a[1], a[0]) if ctx.attr("transA", 0) else (a[0], a[1])
    k2, n = (b[1], b[0]) if ctx.attr("transB", 0) else (b[0], b[1])
    ctx.equate(k1, k2, contraction=True)
    return [TInfo([m, n], None, None, ins[0].dtype)]


def _conv_out(ctx: Ctx, x: list[Dim], kernel: list[int], out_ch: Dim | None) -> list[Dim]:
    n = len(kernel)
    strides = ctx.attr("strides") or [1] * n
    dil = ctx.attr("dilations") or [1] * n
    pads = ctx.attr("pads") or [0] * (2 * n)
    auto = ctx.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    ceil_mode = ctx.attr("ceil_mode", 0)
    spatial = []
    for k in range(n):
        d = x[2 + k]
        vals = []
        for v in d.vals:
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                vals.append(-(-v // strides[k]))
            elif auto == "VALID":
                vals.append((v - dil[k] * (kernel[k] - 1) - 1) // strides[k] + 1)
            else:
                num = v + pads[k] + pads[k + n] - dil[k] * (kernel[k] - 1) - 1
                vals.append((-(-num // strides[k]) if ceil_mode else num // strides[k]) + 1)
        spatial.append(d if tuple(vals) == d.vals else Dim(tuple(vals)))  # a size kept keeps its origin
    return [x[0], out_ch if out_ch is not None else x[1], *spatial]


@op("Conv", "ConvInteger", "QLinearConv")
def _conv(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    w = ins[3] if node.op_type == "QLinearConv" else ins[1]
    kernel = ctx.attr("kernel_shape") or [d.s0 for d in w.shape[2:]]
    return [TInfo(_conv_out(ctx, x.shape, kernel, w.shape[0]), None, None, x.dtype)]


@op("MaxPool", "AveragePool", "LpPool")
def _pool(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    shape = _conv_out(ctx, ins[0].shape, list(ctx.attr("kernel_shape")), None)
    return [TInfo(shape, None, None, ins[0].dtype)] * len(node.output)


@op("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    return [TInfo(x.shape[:2] + [Dim(const(1))] * (len(x.shape) - 2), None, None, x.dtype)]


@op("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")
def _reduce(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x = ins[0]
    r = len(x.shape)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [ctx.attr("axis", 0)]
    else:
        axes = _axes_arg(ctx, node, ins, 1)
        if axes is None and len(node.input) > 1 and node.input[1]:
            return [None]
        if not axes:
            axes = [] if ctx.attr("noop_with_empty_axes", 0) else list(range(r))
    axes = [a + r if a < 0 else a for a in axes]
    keep = ctx.attr("keepdims", 1)
    shape = [Dim(const(1)) if k in axes else d for k, d in enumerate(x.shape) if keep or k not in axes]
    dtype = onnx.TensorProto.INT64 if node.op_type in ("ArgMax", "ArgMin") else x.dtype
    vals = None
    if x.value is not None and node.op_type in ("ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin"):
        fn = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min}
        vals = [fn[node.op_type](x.value_at(p), axis=tuple(axes), keepdims=bool(keep)) for p in range(N_POINTS)]
    return [_with_value(shape, vals, dtype)]


@op("RNN", "GRU", "LSTM")
def _rnn(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    x, w = ins[0], ins[1]
    layout = ctx.attr("layout", 0)
    seq, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    dirs = w.shape[0]
    hidden = Dim(const(ctx.attr("hidden_size")))
    state = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    for k in (5, 6):  # initial_h, initial_c must match the batch
        if len(ins) > k and ins[k] is not None:
            for d, e in zip(state, ins[k].shape, strict=True):
                ctx.equate(e, d)
    y = [batch, seq, dirs, hidden] if layout else [seq, dirs, batch, hidden]
    outs = [TInfo(y, None, None, x.dtype), TInfo(state, None, None, x.dtype), TInfo(state, None, None, x.dtype)]
    return outs[: len(node.output)]


def fallback(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    """Ops without a handler: onnx shape inference of the node alone, once per sample point."""
    per_point: list[list[list[int]] | None] = []
    for p in range(N_POINTS):
        key = node.SerializeToString() + repr([(None if i is None or i.shape is None else
                                                ([d.vals[p] for d in i.shape], i.value and [v[p] for v in i.value]))
                                               for i in ins]).encode()
        if key in ctx.memo:
            per_point.append(ctx.memo[key])
            continue
        inputs, inits = [], []
        for name, info in zip(node.input, ins, strict=True):
            if not name:
                continue
            if info is None or info.shape is None:
                return [None] * len(node.output)
            shp = [d.vals[p] for d in info.shape]
            if info.const is not None and all(d.static for d in info.shape):
                inits.append(onnx.numpy_helper.from_array(info.const, name))
            elif info.value is not None:
                inits.append(onnx.numpy_helper.from_array(
                    info.value_at(p).astype(onnx.helper.tensor_dtype_to_np_dtype(info.dtype)), name))
            inputs.append(onnx.helper.make_tensor_value_info(name, info.dtype, shp))
        outs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        g = onnx.helper.make_graph([node], "n", inputs, outs, initializer=inits)
        m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", ctx.opset)], ir_version=8)
        try:
            inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False)
        except Exception:  # onnx cannot infer it: leave the outputs unknown
            return [None] * len(node.output)
        shapes = {}
        for vi in inferred.graph.output:
            t = vi.type.tensor_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                shapes[vi.name] = ([d.dim_value for d in t.shape.dim], t.elem_type)
        ctx.memo[key] = [shapes.get(o) for o in node.output]
        per_point.append(ctx.memo[key])  # type: ignore[misc]
    result: list[TInfo | None] = []
    for k, _ in enumerate(node.output):
        got = [pp[k] for pp in per_point]  # type: ignore[index]
        if any(g is None for g in got) or len({len(g[0]) for g in got}) != 1:
            result.append(None)
            continue
        dims = [Dim(tuple(g[0][j] for g in got)) for j in range(len(got[0][0]))]
        result.append(TInfo(dims, None, None, got[0][1]))
    return result
