"""Dimensions evaluated at several sample points.

A symbolic dimension is represented by its value at a fixed list of *sample points*: point 0 is the
static export (every symbol at its original value), the other points give every symbol a distinct
value. Two dims are the same function of the symbols when their value tuples agree, which covers
products (``batch*seq``), sums and the floor arithmetic of convolutions without a symbolic algebra.
A dim equal at every point is static.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Vals = tuple[int, ...]

# Sample point k (k >= 1) gives a symbol of static value v the value v * _MUL[k-1] + offset, where
# offsets differ per symbol: products, coincidences and strides stay distinguishable. At the last point
# they lie 71 apart, so two symbols of equal size stay apart after a stride of up to 64 (height/8 and
# width/8 of a square export).
_MUL = (2, 3, 5)
_OFFSETS = ((1, 2, 2), (3, 4, 73), (5, 8, 144), (7, 10, 215), (9, 14, 286), (11, 16, 357))


@dataclass(frozen=True)
class Symbol:
    """A user symbol: its name, its static value and its sample values."""

    name: str
    static: int
    vals: Vals


def make_symbols(statics: dict[str, int], multiples: dict[str, int] | None = None) -> dict[str, Symbol]:
    """Give every symbol its sample values (point 0 is the static value); a symbol restricted to
    multiples of ``k`` samples only multiples of ``k``."""
    out = {}
    for i, (name, v) in enumerate(statics.items()):
        off = _OFFSETS[i % len(_OFFSETS)]
        extra = i // len(_OFFSETS) * 24
        k = (multiples or {}).get(name, 1)
        vals = (v, *(v * m + (o + extra) * k for m, o in zip(_MUL, off, strict=True)))
        out[name] = Symbol(name, v, vals)
    return out


N_POINTS = 1 + len(_MUL)


@dataclass(frozen=True)
class Origin:
    """Where a static dim came from, so that a binding can change it.

    kind "axis": axis ``pos`` of constant tensor ``name``.
    kind "entry": entry ``pos`` of input ``index`` of node ``name`` (a shape-valued input).
    kind "choice": output ``pos`` of Reshape ``name`` where the solver chose where a symbol goes.
    """

    kind: str
    name: str
    index: int
    pos: int

    def describe(self) -> str:
        if self.kind == "axis":
            return f"constant '{self.name}' axis {self.index}"
        if self.kind == "choice":
            return f"node '{self.name}' output dim {self.pos}"
        return f"node '{self.name}' input {self.index} entry {self.pos}"


@dataclass(frozen=True)
class Dim:
    """A dim and where it came from. ``parts`` records the dims a Reshape merged into it (row-major) and
    ``terms`` the dims a Concat added up along it: when a baked dim meets a symbolic one of the same
    structure, their pieces are matched one by one."""

    vals: Vals
    origin: Origin | None = None
    parts: tuple[Dim, ...] | None = field(default=None, compare=False)
    terms: tuple[Dim, ...] | None = field(default=None, compare=False)

    @property
    def s0(self) -> int:
        return self.vals[0]

    @property
    def static(self) -> bool:
        return all(v == self.vals[0] for v in self.vals)


def const(v: int) -> Vals:
    return (int(v),) * N_POINTS


def is_static(vals: Vals) -> bool:
    return all(v == vals[0] for v in vals)


def prod(dims: list[Vals]) -> Vals:
    out = const(1)
    for d in dims:
        out = tuple(a * b for a, b in zip(out, d, strict=True))
    return out


def factor(vals: Vals, symbols: dict[str, Symbol]) -> tuple[int, dict[str, int]] | None:
    """Write ``vals`` as ``c * prod(symbol ** e)``; None when it is not such a monomial."""
    powers: dict[str, int] = {}
    rest = list(vals)
    for s in symbols.values():
        while all(s.vals[i] > 1 and rest[i] % s.vals[i] == 0 for i in range(1, N_POINTS)) and any(
            r != 0 for r in rest
        ):
            cand = [r // s.vals[i] for i, r in enumerate(rest)]
            if rest[0] % s.vals[0]:
                break
            rest = cand
            powers[s.name] = powers.get(s.name, 0) + 1
    if not is_static(tuple(rest)):
        return None
    return rest[0], powers


def describe(vals: Vals, symbols: dict[str, Symbol]) -> str:
    """A readable name for a dim: ``16``, ``seq``, ``batch*seq``, ``2*seq`` or ``?``."""
    if is_static(vals):
        return str(vals[0])
    f = factor(vals, symbols)
    if f is None:
        return "?"
    c, powers = f
    parts = [str(c)] if c != 1 else []
    for name, e in powers.items():
        parts += [name] * e
    return "*".join(parts)
