"""Symbolic sizes: the polynomial type, its recovery from sample points, and the sample points themselves."""

from __future__ import annotations

import itertools
import random

import pytest

from winml_dynify.dims import N_POINTS, Poly, describe, evaluate, fit, make_symbols, parse

NAMES = ("batch", "past", "seq", "total")


def _random_poly(rng: random.Random, names=NAMES, terms: int = 3, degree: int = 2) -> Poly:
    out = Poly()
    for _ in range(rng.randint(1, terms)):
        mono = Poly.constant(rng.choice([-3, -1, 1, 2, 5]))
        for _ in range(rng.randint(0, degree)):
            mono = mono * Poly.symbol(rng.choice(names))
        out = out + mono
    return out


def _env(rng: random.Random) -> dict[str, int]:
    return {n: rng.randint(-20, 50) for n in NAMES}


def test_canonical_form_is_independent_of_construction_order():
    b, p, s = Poly.symbol("batch"), Poly.symbol("past"), Poly.symbol("seq")
    assert p + s == s + p and hash(p + s) == hash(s + p)
    assert b * (p + s) == s * b + b * p
    assert str(p + s) == "past + seq"
    assert str(2 * b * s) == "2*batch*seq"
    assert str(s * s + 3 - b) == "seq*seq - batch + 3"
    assert (p + s - p) == s and (s - s) == Poly() and str(Poly()) == "0"


@pytest.mark.parametrize("seed", range(40))
def test_arithmetic_matches_evaluation(seed):
    rng = random.Random(seed)
    a, b = _random_poly(rng), _random_poly(rng)
    for _ in range(5):
        env = _env(rng)
        x, y = a.evaluate(env), b.evaluate(env)
        assert (a + b).evaluate(env) == x + y
        assert (a - b).evaluate(env) == x - y
        assert (a * b).evaluate(env) == x * y
        assert (-a).evaluate(env) == -x
    assert parse(str(a)) == a


def test_exact_division():
    b, s = Poly.symbol("batch"), Poly.symbol("seq")
    assert (6 * b * s + 4 * s).divide(2 * s) == 3 * b + 2
    assert (6 * b * s).divide(4) is None  # 6/4 is no integer
    assert (b + s).divide(b) is None  # seq has no factor batch
    assert (b * s + s).divide(b + 1) is None  # only constants and monomials divide


def test_sample_values_are_independent_primes_per_symbol():
    syms = make_symbols({"batch": 2, "enc_seq": 12, "dec_seq": 4})
    vals = [s.vals for s in syms.values()]
    assert all(len(v) == N_POINTS for v in vals)
    assert [v[0] for v in vals] == [2, 12, 4]
    later = [x for v in vals for x in v[1:]]
    assert len(set(later)) == len(later)
    for u, v in itertools.permutations(vals, 2):  # no symbol's values are multiples of another's
        assert not all(x % y == 0 for x, y in zip(u[1:], v[1:], strict=True))


def test_multiples_restrict_the_sample_values():
    syms = make_symbols({"height": 64, "width": 96}, {"height": 32, "width": 32})
    assert all(v % 32 == 0 for s in syms.values() for v in s.vals)


def test_fit_recovers_sums_products_and_exported_coincidences():
    # enc_seq exported at a multiple of batch and of dec_seq: no greedy factoring can mistake them
    syms = make_symbols({"batch": 2, "enc_seq": 12, "dec_seq": 4})
    b, e, d = (Poly.symbol(n) for n in syms)
    for expr in (e, b * e, 2 * b * e * d, e + d, b * e + b * d, e * e + 1, b * e * d + d, 3 * e - 2 * d):
        assert fit(evaluate(expr, syms), syms) == expr, expr
    assert describe(evaluate(b * (e + d), syms), syms) == "batch*dec_seq + batch*enc_seq"


@pytest.mark.parametrize("seed", range(20))
def test_fit_recovers_random_polynomials(seed):
    rng = random.Random(seed)
    names = rng.sample(NAMES, 3)
    syms = make_symbols({n: rng.randint(1, 20) for n in NAMES})
    expr = _random_poly(rng, names, terms=3, degree=2)
    if expr.is_constant:
        return
    assert fit(evaluate(expr, syms), syms) == expr


def test_floor_sizes_stay_opaque():
    syms = make_symbols({"batch": 1, "height": 33})
    h = syms["height"].vals
    assert fit(tuple((v - 1) // 2 + 1 for v in h), syms) is None
    assert describe(tuple((v + 1) // 4 for v in h), syms) == "?"


def test_derived_symbols_follow_their_polynomial_and_are_no_basis():
    p, s = Poly.symbol("past"), Poly.symbol("seq")
    syms = make_symbols({"past": 8, "seq": 4, "total": 12}, derived={"total": p + s})
    assert syms["total"].vals == evaluate(p + s, syms)
    assert fit(syms["total"].vals, syms) == p + s


def test_a_symbol_exported_at_zero_divides_nothing():
    """An empty axis made symbolic (``axes [0]`` of a Reduce) is a symbol of static value 0: sizes of the
    other symbols are still read back, and none is taken for a multiple of it."""
    syms = make_symbols({"n": 3, "e": 0})
    assert fit(syms["n"].vals, syms) == Poly.symbol("n")
    assert fit(tuple(2 * v for v in syms["n"].vals), syms) == 2 * Poly.symbol("n")
