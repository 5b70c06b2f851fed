"""Symbolic sizes: exact integer polynomials of the symbols, checked at sample points.

The analysis carries every dimension as its value at a fixed list of *sample points* (:data:`Vals`):
point 0 is the static export (every symbol at its original value), every other point gives every symbol
a distinct prime (times the symbol's required multiple), so no symbol's values are multiples of another's.
Propagating values is cheap and covers every op, including the floor arithmetic of strided convolutions.

What a size *is* comes from :func:`fit`: the exact integer polynomial of the symbols (:class:`Poly`, such
as ``past + seq`` or ``2*batch*seq``) that takes those values at every point. A size that is no such
polynomial (``(h - 1) // 2 + 1``) stays opaque and is read at run time from a tensor that carries it.
A symbol may be *derived*: the graph requires it to equal a polynomial of the others (an attention mask's
length ``total == past + seq``), and its sample values are that polynomial's.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

Vals = tuple[int, ...]
Monomial = tuple[tuple[str, int], ...]  # (symbol, exponent) pairs sorted by symbol, exponents > 0

N_POINTS = 12
_SPREAD_POINT, _SPREAD_SYMBOL = 53, 389  # how far apart the primes of two points / two symbols lie
_MAX_DEGREE = 3
_NEAR_POINTS = 2  # sample points of moderate size (a table of 64 rows still covers them)
_CHECK_POINTS = 2  # points beyond what a fit needs, so that a fit is always checked independently


@dataclass(frozen=True, order=True)
class Poly:
    """An integer polynomial of the symbols in canonical form: terms sorted by degree (highest first),
    then by symbol names, no zero coefficients. Hashable; equal polynomials are equal objects."""

    terms: tuple[tuple[Monomial, int], ...] = ()

    @staticmethod
    def make(terms: dict[Monomial, int]) -> Poly:
        merged: dict[Monomial, int] = {}
        for m, c in terms.items():
            key = tuple(sorted(m))
            merged[key] = merged.get(key, 0) + c
        items = [(m, c) for m, c in merged.items() if c != 0]
        items.sort(key=lambda t: (-sum(e for _, e in t[0]), t[0]))
        return Poly(tuple(items))

    @staticmethod
    def constant(c: int) -> Poly:
        return Poly.make({(): int(c)})

    @staticmethod
    def symbol(name: str) -> Poly:
        return Poly.make({((name, 1),): 1})

    # -- arithmetic ------------------------------------------------------------------------------
    def _coeffs(self) -> dict[Monomial, int]:
        return dict(self.terms)

    def __add__(self, other: Poly | int) -> Poly:
        out = self._coeffs()
        for m, c in _as_poly(other).terms:
            out[m] = out.get(m, 0) + c
        return Poly.make(out)

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly.make({m: -c for m, c in self.terms})

    def __sub__(self, other: Poly | int) -> Poly:
        return self + (-_as_poly(other))

    def __rsub__(self, other: Poly | int) -> Poly:
        return _as_poly(other) - self

    def __mul__(self, other: Poly | int) -> Poly:
        out: dict[Monomial, int] = {}
        for (m1, c1), (m2, c2) in itertools.product(self.terms, _as_poly(other).terms):
            m = _mono_mul(m1, m2)
            out[m] = out.get(m, 0) + c1 * c2
        return Poly.make(out)

    __rmul__ = __mul__

    def divide(self, other: Poly | int) -> Poly | None:
        """``self / other`` when ``other`` is a constant or a monomial that divides every term exactly;
        None otherwise."""
        o = _as_poly(other)
        if len(o.terms) != 1 or o.terms[0][1] == 0:
            return None
        dm, dc = o.terms[0]
        out: dict[Monomial, int] = {}
        for m, c in self.terms:
            q = _mono_div(m, dm)
            if q is None or c % dc:
                return None
            out[q] = c // dc
        return Poly.make(out)

    # -- reading ---------------------------------------------------------------------------------
    def evaluate(self, env: dict[str, int]) -> int:
        return sum(c * math.prod(env[s] ** e for s, e in m) for m, c in self.terms)

    @property
    def is_constant(self) -> bool:
        return all(not m for m, _ in self.terms)

    @property
    def value(self) -> int:
        """The constant term (the whole value of a constant polynomial)."""
        return dict(self.terms).get((), 0)

    @property
    def symbols(self) -> set[str]:
        return {s for m, _ in self.terms for s, _ in m}

    @property
    def degree(self) -> int:
        return max((sum(e for _, e in m) for m, _ in self.terms), default=0)

    def monomial(self) -> tuple[int, dict[str, int]] | None:
        """``(c, {symbol: exponent})`` when the polynomial is ``c * monomial``; None otherwise."""
        if len(self.terms) != 1:
            return (0, {}) if not self.terms else None
        m, c = self.terms[0]
        return c, dict(m)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        out = ""
        for k, (m, c) in enumerate(self.terms):
            body = "*".join(s for s, e in m for _ in range(e))
            mag = abs(c)
            text = body if mag == 1 and body else f"{mag}*{body}" if body else str(mag)
            if k == 0:
                out = f"-{text}" if c < 0 else text
            else:
                out += f" - {text}" if c < 0 else f" + {text}"
        return out


def parse(text: str) -> Poly:
    """The polynomial a printed one (``past + seq``, ``2*batch*seq - 1``) stands for."""
    out = Poly()
    for k, chunk in enumerate(text.replace(" - ", " + -").split(" + ")):
        sign = -1 if chunk.startswith("-") else 1
        term = Poly.constant(sign)
        for f in chunk.lstrip("-").split("*"):
            if not f:
                raise ValueError(f"malformed size {text!r} (term {k})")
            term = term * (int(f) if f.isdigit() else Poly.symbol(f))
        out = out + term
    return out


def _as_poly(x: Poly | int) -> Poly:
    return x if isinstance(x, Poly) else Poly.constant(x)


def _mono_mul(a: Monomial, b: Monomial) -> Monomial:
    out = dict(a)
    for s, e in b:
        out[s] = out.get(s, 0) + e
    return tuple(sorted(out.items()))


def _mono_div(a: Monomial, b: Monomial) -> Monomial | None:
    out = dict(a)
    for s, e in b:
        if out.get(s, 0) < e:
            return None
        out[s] -= e
    return tuple(sorted((s, e) for s, e in out.items() if e))


# -- symbols and sample points ---------------------------------------------------------------------
@dataclass(frozen=True)
class Symbol:
    """A user symbol: its name, its static value and its sample values. ``expr`` is set on a derived
    symbol: the polynomial of the other symbols the graph requires it to equal."""

    name: str
    static: int
    vals: Vals
    expr: Poly | None = field(default=None, compare=False)


def _primes(limit: int) -> list[int]:
    sieve = np.ones(limit, bool)
    sieve[:2] = False
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = False
    return [int(p) for p in np.nonzero(sieve)[0]]


_PRIMES = _primes(40000)


def make_symbols(statics: dict[str, int], multiples: dict[str, int] | None = None,
                 derived: dict[str, Poly] | None = None) -> dict[str, Symbol]:
    """Give every symbol its sample values (point 0 is the static value). A free symbol gets, at every
    other point, a distinct prime above twice its static size (all primes distinct across symbols and
    points), times ``k`` when it is restricted to multiples of ``k``. A ``derived`` symbol takes the values
    of its polynomial."""
    derived = derived or {}
    out: dict[str, Symbol] = {}
    used: set[int] = set()
    free = [s for s in statics if s not in derived]
    for i, name in enumerate(free):
        v = statics[name]
        k = (multiples or {}).get(name, 1)
        base = 2 * -(-v // k) + 64 + _SPREAD_SYMBOL * i
        vals = [v]
        for p in range(1, N_POINTS):  # the first two points stay near the export (run as real shapes in tests)
            near = 2 * -(-v // k) + 1 + 6 * p + 17 * i
            j = _next_prime_index(near if p <= _NEAR_POINTS else base + _SPREAD_POINT * p)
            while _PRIMES[j] in used:
                j += 1
            used.add(_PRIMES[j])
            vals.append(k * _PRIMES[j])
        out[name] = Symbol(name, v, tuple(vals))
    for name, expr in derived.items():
        env = [{s: out[s].vals[p] for s in expr.symbols} for p in range(N_POINTS)]
        out[name] = Symbol(name, statics[name], tuple(expr.evaluate(e) for e in env), expr)
    return {s: out[s] for s in statics}


def _next_prime_index(n: int) -> int:
    return bisect.bisect_left(_PRIMES, n)


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
    structure, their pieces are matched one by one. ``carrier`` names the graph input and axis a static
    dim was read from, so that a refusal can name inputs the data flow ties to a symbol."""

    vals: Vals
    origin: Origin | None = None
    parts: tuple[Dim, ...] | None = field(default=None, compare=False)
    terms: tuple[Dim, ...] | None = field(default=None, compare=False)
    carrier: tuple[str, int] | None = field(default=None, compare=False)

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


def evaluate(expr: Poly, symbols: dict[str, Symbol]) -> Vals:
    """The sample values of ``expr``."""
    return tuple(expr.evaluate({s: symbols[s].vals[p] for s in expr.symbols}) for p in range(N_POINTS))


def _free(symbols: dict[str, Symbol]) -> tuple[Symbol, ...]:
    return tuple(s for s in symbols.values() if s.expr is None)


def factor(vals: Vals, symbols: dict[str, Symbol]) -> tuple[int, dict[str, int]] | None:
    """Write ``vals`` as ``c * prod(symbol ** e)`` over the free symbols; None when it is no monomial."""
    p = fit(vals, symbols)
    return None if p is None else p.monomial()


def fit(vals: Vals, symbols: dict[str, Symbol]) -> Poly | None:
    """The integer polynomial of the free symbols that takes ``vals`` at every sample point, or None.

    A monomial is read off by exact division (the symbols' values are distinct primes); otherwise the
    polynomials of up to :data:`_MAX_DEGREE` in one, two or three symbols are tried, smallest first,
    each solved on part of the points and accepted only when it is exact at every point."""
    if any(not isinstance(v, int) for v in vals):
        return None
    return _fit(tuple(vals), _free(symbols))


@functools.lru_cache(maxsize=8192)
def _fit(vals: Vals, free: tuple[Symbol, ...]) -> Poly | None:
    if is_static(vals):
        return Poly.constant(vals[0])
    mono = _monomial(vals, free)
    if mono is not None:
        return mono
    for size in range(1, min(3, len(free)) + 1):
        for subset in itertools.combinations(free, size):
            names = tuple(s.name for s in subset)
            for basis in (*(_basis(names, d) for d in range(1, _MAX_DEGREE + 1)), _multilinear(names)):
                if len(basis) + _CHECK_POINTS > N_POINTS:
                    continue
                got = _solve(vals, subset, basis)
                if got is not None:
                    return got
    return None


def _monomial(vals: Vals, free: tuple[Symbol, ...]) -> Poly | None:
    rest = list(vals)
    powers: dict[str, int] = {}
    if any(r == 0 for r in rest):
        return None
    for s in free:
        if s.vals[0] == 0 or any(s.vals[p] <= 1 for p in range(1, N_POINTS)):
            continue  # a symbol exported at 0 (an empty axis) divides nothing
        while all(rest[p] % s.vals[p] == 0 for p in range(N_POINTS)):
            rest = [r // s.vals[p] for p, r in enumerate(rest)]
            powers[s.name] = powers.get(s.name, 0) + 1
    if not is_static(tuple(rest)):
        return None
    return Poly.make({tuple(sorted(powers.items())): rest[0]})


@functools.lru_cache(maxsize=256)
def _basis(names: tuple[str, ...], degree: int) -> tuple[Monomial, ...]:
    """The monomials of the symbols ``names`` of total degree <= ``degree``, the constant included."""
    out = []
    for exps in itertools.product(range(degree + 1), repeat=len(names)):
        if sum(exps) <= degree:
            out.append(tuple((n, e) for n, e in zip(names, exps, strict=True) if e))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _multilinear(names: tuple[str, ...]) -> tuple[Monomial, ...]:
    """The products of distinct symbols of ``names`` (``batch*past*seq``), the constant included."""
    return tuple(tuple((n, 1) for n, use in zip(names, mask, strict=True) if use)
                 for mask in itertools.product((0, 1), repeat=len(names)))


def _solve(vals: Vals, subset: tuple[Symbol, ...], basis: tuple[Monomial, ...]) -> Poly | None:
    by_name = {s.name: s for s in subset}
    scale = {s.name: float(max(s.vals)) for s in subset}
    rows = range(N_POINTS)
    a = np.array([[math.prod((by_name[n].vals[p] / scale[n]) ** e for n, e in m) for m in basis] for p in rows])
    coef, *_ = np.linalg.lstsq(a, np.array(vals, np.float64), rcond=None)
    norms = np.array([math.prod(scale[n] ** e for n, e in m) for m in basis])
    ints = [round(c / w) for c, w in zip(coef, norms, strict=True)]
    poly = Poly.make(dict(zip(basis, ints, strict=True)))
    if not poly.symbols or any(
            poly.evaluate({n: by_name[n].vals[p] for n in poly.symbols}) != vals[p] for p in rows):
        return None
    return poly


def describe(vals: Vals, symbols: dict[str, Symbol]) -> str:
    """A readable name for a dim: ``16``, ``seq``, ``batch*seq``, ``past + seq`` or ``?``."""
    if is_static(vals):
        return str(vals[0])
    p = fit(vals, symbols)
    return "?" if p is None else str(p)
