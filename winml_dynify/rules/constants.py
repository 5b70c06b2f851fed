"""Folded constant tensors whose axes follow a symbol: recover how they were computed.

Tracing folds ``arange``, fills, masks and table look-ups into constants of the exported size. For each
constant with bound axes the content is classified and rebuilt at run time:

* **fill**: constant along a bound axis -> that axis collapses to 1 and is ``Expand``-ed (not where the
  consumer broadcasts it anyway: see :func:`covered`);
* **affine**: ``base + sum of slope * index`` along the bound axes (position ids, mask indices, rotary
  angles, GatherND index pairs) -> ``Range``s; a size-1 axis bound as an index (a folded
  ``arange(batch)``) is the case ``slope = 1``;
* **table prefix**: rows ``o .. o+n`` of a table still in the model -> ``Slice`` of that table,
  bounding the symbol by the table's length;
* **exported prefix**: any other content along one axis (a position table folded by an optimiser, whose
  source is gone) -> ``Slice`` of the constant itself: the symbol is bounded by the exported size, and the
  parity oracles check the shorter sizes;
* **folded grid**: along an axis that concatenates flattened feature grids, content affine in every piece's
  grid indices (anchor points, stride tables of detection heads) -> ``Range`` per piece (see
  :mod:`.grids`);
* **rotary table**: ``cos``/``sin`` of ``w * index`` with a frequency per column -> ``Cos``/``Sin`` of a
  ``Range`` (a folded rotary-embedding table);
* **relative mask**: a square pair of axes whose content depends only on ``j - i`` -> a step function
  (causal masks, ``Trilu``-like) or affine function of ``j - i`` computed at run time; any other such
  content (relative-position buckets) -> ``Slice`` of the exported block, bounding the symbol.

Anything else is refused with the constant's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..context import Binding, Lazy, TInfo
from ..dims import Vals
from ..errors import RefusedError
from ..realize import Realizer
from . import grids

MAX_STEPS = 3  # a relative mask with more pieces (position buckets) is kept at its exported size


@dataclass
class Regenerated:
    tensor: str
    kind: str
    upper: list[tuple[Vals, int, str]] = field(default_factory=list)  # (dim, max, reason)
    index: tuple[Vals, int, int] | None = None  # affine integer content: (dim, max base, max slope)
    unexpanded: str | None = None  # the content before the fill axes are expanded (size 1 on them)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(np.allclose(a, b, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(a).max(initial=0)))))
    return bool(np.array_equal(a, b))


def _index(rz: Realizer, vals: Vals, rank: int, axis: int, dtype: int) -> str:
    """``arange(vals)`` shaped with size 1 on every axis but ``axis``, cast to ``dtype``."""
    r = rz.node("Range", [rz.const(np.array(0, np.int64)), rz.scalar(vals), rz.const(np.array(1, np.int64))])
    shape = [1] * rank
    shape[axis] = -1
    r = rz.node("Reshape", [r, rz.const(np.array(shape, np.int64))])
    if dtype != onnx.TensorProto.INT64:
        r = rz.node("Cast", [r], to=dtype)
    return r


def _affine(arr: np.ndarray, kinds: dict[int, str]) -> tuple[np.ndarray, dict[int, np.ndarray]] | None:
    """``arr == base + sum_a slope_a * index_a`` over the axes ``kinds`` (each slope constant along its
    own axis); None when the content is not of that form."""
    if arr.dtype == np.bool_:
        return None
    base = arr
    for a in kinds:
        base = np.take(base, [0], axis=a)
    slopes: dict[int, np.ndarray] = {}
    rebuilt = base
    for a, kind in kinds.items():
        n = arr.shape[a]
        if kind == "arange" and n == 1:
            slope = np.ones_like(base)
        elif kind == "arange-component" and n == 1:  # GatherND index pairs: only the row component counts
            slope = np.zeros_like(base)
            slope[..., 0] = 1
        elif n < 2:
            return None
        else:
            second = arr
            for b in kinds:
                second = np.take(second, [1 if b == a else 0], axis=b)
            slope = second - base
        slopes[a] = slope
        rebuilt = rebuilt + slope * np.arange(n).reshape([n if k == a else 1 for k in range(arr.ndim)])
    with np.errstate(over="ignore", invalid="ignore"):  # a mask of float min is no arange: it fails _close
        fits = _close(arr, rebuilt.astype(arr.dtype))
    return (base, slopes) if fits else None


def _table_prefix(name: str, arr: np.ndarray, axis: int, tables: dict[str, Lazy]):
    n = arr.shape[axis]
    for tname, tbl in tables.items():
        if tname == name or tbl.dtype != arr.dtype or tbl.ndim != arr.ndim or tbl.shape[axis] <= n:
            continue
        if any(tbl.shape[k] != arr.shape[k] for k in range(arr.ndim) if k != axis):
            continue
        rows = tbl.array
        for o in range(rows.shape[axis] - n + 1):
            if _close(np.take(rows, range(o, o + n), axis=axis), arr):
                return tname, o, rows.shape[axis]
    return None


def _trigonometric(arr: np.ndarray, axis: int) -> tuple[str, np.ndarray] | None:
    """``cos(w * index)`` or ``sin(w * index)`` along ``axis`` with a frequency per column (folded rotary
    tables): ("Cos" | "Sin", w), with w taken from the second row and every row checked."""
    if arr.dtype.kind != "f" or arr.shape[axis] < 3:
        return None
    first, second = np.take(arr, [0], axis=axis), np.take(arr, [1], axis=axis)
    idx = np.arange(arr.shape[axis]).reshape([-1 if k == axis else 1 for k in range(arr.ndim)])
    cands = []
    if np.allclose(first, 1, atol=1e-6):
        cands.append(("Cos", np.arccos(np.clip(second, -1, 1))))
    if np.allclose(first, 0, atol=1e-6):
        w = np.arcsin(np.clip(second, -1, 1))
        cands += [("Sin", w), ("Sin", np.pi - w)]
    for fn, w in cands:
        w = w.astype(arr.dtype)
        if np.allclose((np.cos if fn == "Cos" else np.sin)(w * idx), arr, atol=1e-4):
            return fn, w
    return None


def _relative(arr: np.ndarray, a: int, b: int) -> dict[int, object] | None:
    """f with ``arr[..., i, ..., j] == f(j - i)`` (f's values are scalars, or vectors over the other
    axes such as attention heads); None when the content is not of that form."""
    n = arr.shape[a]
    if arr.shape[b] != n:
        return None
    m = np.moveaxis(arr, (a, b), (0, 1)).reshape(n, n, -1)
    f: dict[int, np.ndarray] = {}
    for d in [*range(n), *range(-1, -n, -1)]:  # one diagonal at a time: each must be constant
        diag = np.diagonal(m, offset=d, axis1=0, axis2=1)  # (other, positions on the diagonal)
        first = diag[:, :1]
        if not _close(np.broadcast_to(first, diag.shape), diag):
            return None
        f[d] = first[:, 0]
    if m.shape[2] == 1:
        return {d: v[0].item() for d, v in f.items()}
    return {d: tuple(v.tolist()) for d, v in f.items()}


def regenerate(name: str, arr: np.ndarray, dtype: int, axes: dict[int, Binding], tables: dict[str, Lazy],
               rz: Realizer, prefix_ok: bool = False,
               layouts: Callable[[Vals], list[grids.Layout]] | None = None) -> Regenerated:
    """Run-time replacement for constant ``name`` whose axes ``axes`` follow symbols.

    ``prefix_ok``: the symbols are sequence axes checked by the padding oracle, so content that cannot be
    extended may be kept for the exported positions (bounding the symbol). ``layouts``: how a dim was
    built from flattened grids (:func:`.grids.layouts`), for folded grids.
    """
    offsets = {a: b for a, b in axes.items() if b.kind == "row-offset"}
    axes = {a: b for a, b in axes.items() if a not in offsets}
    uniform = [a for a, b in axes.items() if not b.kind.startswith("arange") and _close(
        arr, np.broadcast_to(np.take(arr, [0], axis=a), arr.shape))]
    core = arr
    for a in uniform:
        core = np.take(core, [0], axis=a)
    rest = sorted(a for a in axes if a not in uniform)
    kinds = ["fill"] if uniform else []
    index = None
    upper: list[tuple[Vals, int, str]] = []
    aff = _affine(core, {a: axes[a].kind for a in rest}) if rest else None
    if not rest:
        out = rz.const(core)
    elif aff is not None:
        base, slopes = aff
        out = None
        for a, slope in slopes.items():
            term = _index(rz, axes[a].vals, core.ndim, a, dtype)
            if not np.all(slope == 1):
                term = rz.node("Mul", [term, rz.const(slope)])
            out = term if out is None else rz.node("Add", [out, term])
        if not np.all(base == 0):
            out = rz.node("Add", [out, rz.const(base)])
        kinds.append("arange" if any(axes[a].kind.startswith("arange") for a in rest) else "affine")
        if core.dtype.kind == "i" and len(rest) == 1:
            index = (axes[rest[0]].vals, int(base.max()), int(slopes[rest[0]].max()))
    elif len(rest) == 1:
        a = rest[0]
        vals = axes[a].vals
        prefix = _table_prefix(name, core, a, tables)
        trig = None if prefix else _trigonometric(core, a)
        grid = None if prefix or trig else _grid(name, core, a, layouts(vals) if layouts else [])
        if grid is not None:
            out = grids.realize(grid, a, core.ndim, dtype, rz)
            kinds.append("grid")
        elif trig is not None:
            fn, freq = trig
            angle = rz.node("Mul", [_index(rz, vals, core.ndim, a, dtype), rz.const(freq)])
            out = rz.node(fn, [angle])
            kinds.append(f"rotary-{fn.lower()}")
        elif prefix is not None:
            tname, o, total = prefix
            out = rz.rows(tname, vals, total - o, a, o)
            upper.append((vals, total - o, f"table '{tname}' has {total} rows"))
            kinds.append("table-prefix")
        elif prefix_ok and not axes[a].kind.startswith("arange") and core.shape[a] > 1:
            n = core.shape[a]  # the rest of the table is gone: keep the exported rows, bound the symbol
            out = rz.rows(rz.const(core), vals, n, a)
            upper.append((vals, n, f"constant '{name}' holds only the {n} exported positions"))
            kinds.append("exported-prefix")
        else:
            raise RefusedError(f"constant '{name}' {list(arr.shape)}: axis {a} must follow a symbol, but its "
                               "content is not a fill, an arange, a folded grid or a slice of a table in the model")
    elif len(rest) == 2 and axes[rest[0]].vals == axes[rest[1]].vals:
        a, b = rest
        vals = axes[a].vals
        f = _relative(core, a, b)
        if f is None:
            raise RefusedError(f"constant '{name}' {list(arr.shape)}: axes {a} and {b} must follow a symbol, "
                               "but its content is not a function of the index difference")
        out, kind = _relative_runtime(f, core, a, b, vals, dtype, rz)
        if out is None:
            n = core.shape[a]
            out = rz.rows(rz.rows(rz.const(core), vals, n, a), vals, n, b)
            upper.append((vals, n, f"relative table '{name}' was exported for {n} positions"))
        kinds.append(kind)
    else:
        raise RefusedError(f"constant '{name}' {list(arr.shape)}: axes {rest} follow different symbols; "
                           "its content cannot be rebuilt")
    for a, b in offsets.items():  # index + arange(rows) * row_length along axis a
        row = rz.dim(b.row)
        if dtype != onnx.TensorProto.INT64:
            row = rz.node("Cast", [row], to=dtype)
        out = rz.node("Add", [out, rz.node("Mul", [_index(rz, b.vals, arr.ndim, a, dtype), row])])
        kinds.append("row-offset")
    unexpanded = out if uniform else None
    if uniform:
        out = rz.node("Expand", [out, rz.vector([axes[a].vals if a in uniform else 1 for a in range(arr.ndim)])])
    return Regenerated(out, "+".join(kinds), upper, index, unexpanded)


# ops that broadcast all their inputs together (multidirectional broadcasting)
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Min", "Max", "Sum", "Mean", "And", "Or", "Xor", "Equal",
                 "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Where", "BitwiseAnd", "BitwiseOr", "BitwiseXor"}


def covered(node: onnx.NodeProto, k: int, infos: dict[str, TInfo]) -> bool:
    """True when input ``k`` of a broadcasting ``node`` may lose its fill axes: the other inputs broadcast to
    the node's output shape at every sample point without it, so a size-1 fill axis broadcasts the same
    (a fill constant then needs no run-time ``Expand``)."""
    if node.op_type not in _BROADCASTING or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return False
    out = infos.get(node.output[0])
    others = [infos.get(i) for j, i in enumerate(node.input) if j != k and i]
    if out is None or out.shape is None or not others or any(o is None or o.shape is None for o in others):
        return False
    for p in range(len(out.shape[0].vals) if out.shape else 1):
        shapes = [[d.vals[p] for d in o.shape] for o in others]
        try:
            if list(np.broadcast_shapes(*map(tuple, shapes))) != [d.vals[p] for d in out.shape]:
                return False
        except ValueError:
            return False
    return True


def _grid(name: str, arr: np.ndarray, axis: int, layouts: list[grids.Layout]) -> list[grids.Piece] | None:
    """The one layout under which ``arr`` is a folded grid along ``axis``; refused when several fit with
    different pieces (their run-time sizes would differ)."""
    fits = [(lay, p) for lay in layouts if (p := grids.fit(arr, axis, lay)) is not None]
    if len(fits) > 1:
        raise RefusedError(f"constant '{name}' {list(arr.shape)}: axis {axis} fits several grid layouts "
                           f"({len(fits)}); which one the model uses is ambiguous")
    return fits[0][1] if fits else None


def _relative_runtime(f: dict[int, object], core: np.ndarray, a: int, b: int, vals: Vals, dtype: int,
                      rz: Realizer) -> tuple[str | None, str]:
    """A step or affine function of ``j - i`` at run time; (None, kind) when ``f`` is neither."""
    ds = sorted(f)
    values = [f[d] for d in ds]
    if isinstance(values[0], tuple):  # one value per head: kept at the exported size
        return None, "relative-table"

    def difference() -> str:
        i = _index(rz, vals, core.ndim, a, onnx.TensorProto.INT64)
        j = _index(rz, vals, core.ndim, b, onnx.TensorProto.INT64)
        return rz.node("Sub", [j, i])

    if core.dtype.kind in "fi" and len(ds) > 1:
        slope = values[1] - values[0]
        if all(np.isclose(values[0] + slope * (d - ds[0]), v) for d, v in zip(ds, values, strict=True)):
            diff = difference()
            if dtype != onnx.TensorProto.INT64:
                diff = rz.node("Cast", [diff], to=dtype)
            out = rz.node("Mul", [diff, rz.const(np.array(slope, core.dtype))])
            return rz.node("Add", [out, rz.const(np.array(f[0], core.dtype))]), "relative-affine"
    cuts = [k for k in range(1, len(ds)) if values[k] != values[k - 1]]
    if 1 <= len(cuts) <= MAX_STEPS:
        # piecewise constant in j - i (causal masks, local-attention bands): the outer pieces continue
        diff = difference()
        kind = "causal-mask" if len(cuts) == 1 else "band-mask"
        steps = [rz.node("GreaterOrEqual", [diff, rz.const(np.array(ds[c], np.int64))]) for c in cuts]
        if core.dtype == np.bool_:  # onnxruntime has no boolean Where: OR the pieces that are True
            out = None
            for k, v in enumerate([values[0]] + [values[c] for c in cuts]):
                if not v:
                    continue
                parts = ([steps[k - 1]] if k > 0 else []) + ([rz.node("Not", [steps[k]])] if k < len(steps) else [])
                piece = parts[0] if len(parts) == 1 else rz.node("And", parts)
                out = piece if out is None else rz.node("Or", [out, piece])
            return out, kind
        out = rz.const(np.array(values[0], dtype=core.dtype))
        for c, step in zip(cuts, steps, strict=True):
            out = rz.node("Where", [step, rz.const(np.array(values[c], dtype=core.dtype)), out])
        return out, kind
    return None, "relative-table"
