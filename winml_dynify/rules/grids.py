"""Folded grids: constants along an axis made of flattened, concatenated feature grids.

A detection head flattens its feature maps ``[b, c, h/8, w/8]``, ``[b, c, h/16, w/16]``, ... and
concatenates them along one axis; the anchor points it combines with them (``meshgrid(arange(w/s) + 0.5,
arange(h/s) + 0.5)`` per stride) and the stride of every point are folded into constants of the exported
anchor count. The analysis knows how such a dim was built: the pieces a Concat added up (``terms``) and
the row-major factors a Reshape merged into each piece (``parts``). A *layout* is that structure, one tuple
of factors per piece.

A constant bound along such an axis is rebuilt when, in every piece, its content is exactly an affine
function of the piece's grid indices (``base + sum_t slope_t * index_t``, base and slopes free per entry of
the other axes): at run time each piece is a ``Range`` over the piece's size split into grid indices by
``Div``/``Mod``, with the factors read from the tensors that carry them. Content of any other form, or a
factor that is 1 at export (its slope is not seen), is not rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..context import TInfo
from ..dims import Vals, is_static
from ..realize import Realizer

Layout = tuple[tuple[Vals, ...], ...]  # per piece along the axis: its row-major factors


@dataclass(frozen=True)
class Piece:
    """One piece of a fitted grid constant: its factors and its affine coefficients (arrays shaped like
    the constant with the grid axis of size 1; one slope per factor)."""

    factors: tuple[Vals, ...]
    base: np.ndarray
    slopes: tuple[np.ndarray, ...]


def layouts(infos: dict[str, TInfo], vals: Vals) -> list[Layout]:
    """The distinct structures of the dims equal to ``vals`` that were built from pieces or factors."""
    out: list[Layout] = []
    for info in infos.values():
        for d in info.shape or []:
            if d.vals != vals or not (d.terms or d.parts):
                continue
            layout = tuple(tuple(p.vals for p in t.parts) if t.parts else (t.vals,) for t in (d.terms or (d,)))
            if len(layout) == 1 and len(layout[0]) == 1:
                continue  # a plain dim: nothing to split
            if layout not in out:
                out.append(layout)
    return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        scale = max(1.0, float(np.abs(a).max(initial=0)))
        return bool(np.allclose(a, b, rtol=1e-6, atol=1e-6 * scale))
    return bool(np.array_equal(a, b))


def fit(arr: np.ndarray, axis: int, layout: Layout) -> list[Piece] | None:
    """The affine coefficients of every piece of ``arr`` along ``axis``; None when the content is not of
    that form at the exported sizes."""
    if arr.dtype == np.bool_ or sum(int(np.prod([f[0] for f in fs])) for fs in layout) != arr.shape[axis]:
        return None
    moved = np.moveaxis(arr, axis, -1)
    other = moved.shape[:-1]
    pieces = []
    start = 0
    for factors in layout:
        sizes = [f[0] for f in factors]
        n = int(np.prod(sizes))
        grid = moved[..., start:start + n].reshape(*other, *sizes)
        start += n
        origin = (..., *[0] * len(sizes))
        base = grid[origin]
        rebuilt = np.broadcast_to(base[(..., *[None] * len(sizes))], grid.shape).astype(np.float64)
        slopes = []
        for t, f in enumerate(factors):
            if f[0] < 2 and not is_static(f):
                return None  # a symbolic factor of 1: its slope is not in the content
            step = [0] * len(sizes)
            step[t] = 1
            slope = grid[(..., *step)] - base if f[0] > 1 else np.zeros_like(base)
            index = np.arange(f[0]).reshape([f[0] if k == t else 1 for k in range(len(sizes))])
            rebuilt = rebuilt + slope[(..., *[None] * len(sizes))] * index
            slopes.append(np.expand_dims(slope, axis))
        if not _close(grid, rebuilt.astype(arr.dtype)):
            return None
        pieces.append(Piece(factors, np.expand_dims(base, axis), tuple(slopes)))
    return pieces


def realize(pieces: list[Piece], axis: int, ndim: int, dtype: int, rz: Realizer) -> str:
    """The fitted constant at run time: each piece from a ``Range`` over its size, concatenated."""
    shape = [1] * ndim
    shape[axis] = -1
    column = rz.const(np.array(shape, np.int64))
    outs = []
    for piece in pieces:
        sizes = [rz.dim(f) for f in piece.factors]
        total = sizes[0]
        for s in sizes[1:]:
            total = rz.node("Mul", [total, s])
        flat = rz.node("Range", [rz.const(np.array(0, np.int64)),
                                 rz.item(total),
                                 rz.const(np.array(1, np.int64))])
        value = None
        rest = flat
        for t in reversed(range(len(sizes))):  # row-major: the last factor varies fastest
            index = rest
            if t > 0:
                index = rz.node("Mod", [rest, sizes[t]])
                rest = rz.node("Div", [rest, sizes[t]])
            if not np.any(piece.slopes[t]):
                continue
            index = rz.node("Reshape", [index, column])
            if dtype != onnx.TensorProto.INT64:
                index = rz.node("Cast", [index], to=dtype)
            term = rz.node("Mul", [index, rz.const(piece.slopes[t])])
            value = term if value is None else rz.node("Add", [value, term])
        if value is None:
            full = [rz.const(np.array([s], np.int64)) for s in piece.base.shape]
            full[axis] = total
            value = rz.node("Expand", [rz.const(piece.base), rz.node("Concat", full, axis=0)])
        elif np.any(piece.base):
            value = rz.node("Add", [value, rz.const(piece.base)])
        outs.append(value)
    return outs[0] if len(outs) == 1 else rz.node("Concat", outs, axis=axis)
