"""Folded position ranges that start at a symbolic offset: ``arange(past, past + seq)``.

A decoder with a KV cache numbers its new tokens from the cache length on: the position ids (and the
row index of a causal mask, ``i + past``) fold to a constant ``[start, start + n)`` along an axis of
length ``n`` (``seq``). A constant start is a guess when it equals a symbol's exported size: the start is
taken as symbolic only when the data flow says where the range ends, i.e. exactly one size of the graph
is a polynomial ``E`` with ``E == start + n`` at export and ``E - n`` symbolic and free of ``n``'s symbols
(``past + seq`` is the length of the keys the new tokens attend to). Otherwise the constant start stays
(RoBERTa numbers its positions from the padding index + 1).
"""

from __future__ import annotations

import numpy as np
import onnx

from ..context import Binding
from ..dims import Poly, Symbol, evaluate, fit
from ..realize import Realizer
from .constants import Regenerated


def shifted_range(arr: np.ndarray, dtype: int, axes: dict[int, Binding], sizes: set[Poly],
                  symbols: dict[str, Symbol], rz: Realizer,
                  rows: int | None = None) -> tuple[Regenerated, Poly, Poly] | None:
    """``Range(start, start + n)`` shaped like ``arr`` when its content is ``c + index`` (integers, also when
    stored as floats) along its one bound axis (all other axes of size 1) or is one position with no
    bound axis (``n`` = 1), ``c != 0``, and the graph's ``sizes`` name exactly one symbolic start; None
    otherwise. Also returns the range's start and end. ``rows``: the range indexes a table of that many
    rows, so its end is checked at run time not to pass it."""
    if arr.dtype.kind not in "iuf":
        return None
    if not axes and arr.size == 1:  # one new token (a decode step at seq 1): its position is the start
        a, n = arr.ndim - 1, Poly.constant(1)
    elif len(axes) == 1:
        (a, b), = axes.items()
        if b.kind != "follow" or any(n != 1 for k, n in enumerate(arr.shape) if k != a):
            return None
        n = fit(b.vals, symbols)
    else:
        return None
    line = arr.reshape(-1).astype(np.float64)  # rotary positions are float
    c = int(line[0])
    if c == 0 or n is None or not np.array_equal(line, c + np.arange(line.size)):
        return None
    starts = {e - n for e in sizes if e.evaluate(_at_export(e, symbols)) == c + line.size}
    starts = {s for s in starts if not s.is_constant and not s.symbols & n.symbols}  # independent of n
    if len(starts) != 1:
        return None
    start = starts.pop()
    end = start + n
    limit = rz.scalar(evaluate(end, symbols)) if rows is None else \
        rz.item(rz.at_most(evaluate(end, symbols), rows))
    r = rz.node("Range", [rz.scalar(evaluate(start, symbols)), limit, rz.const(np.array(1, np.int64))])
    if dtype != onnx.TensorProto.INT64:
        r = rz.node("Cast", [r], to=dtype)
    shape = rz.const(np.array([-1 if k == a else 1 for k in range(arr.ndim)], np.int64))
    return Regenerated(rz.node("Reshape", [r, shape]), "shifted-arange"), start, end


def _at_export(e: Poly, symbols: dict[str, Symbol]) -> dict[str, int]:
    return {s: symbols[s].static for s in e.symbols}


def graph_sizes(infos, symbols: dict[str, Symbol]) -> set[Poly]:
    """Every symbolic size of the analysed graph that is a polynomial of the symbols."""
    seen = {d.vals for info in infos.values() for d in (info.shape or []) if not d.static}
    return {p for p in (fit(v, symbols) for v in seen) if p is not None}
