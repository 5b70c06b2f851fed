"""Reshape targets: decide what every entry of a baked target means.

Input and output dims are split into groups of equal static element count (the usual reshape
factoring). A group with one output dim gets the group's symbolic product (a flatten such as
``batch*seq``); a group that splits a symbolic product over several outputs is solved by assigning
each symbol factor to one output so that every static size is reproduced, preferring outputs that copy
an input dim, exact size matches and keeping symbols in order. Size-1 dims that carry a symbol (a
batch of 1) pair with the output 1 in the same gap, or join the neighbouring group. Bindings found
downstream override these decisions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import onnx

from ..context import Ctx
from ..dims import Dim, Origin, Vals, const, is_static, prod

Agrees = Callable[[list[Vals] | tuple[Vals, ...]], bool]


def solve_reshape(ctx: Ctx, node: onnx.NodeProto, in_shape: list[Dim], static_out: list[int] | None,
                  entries: list[Dim]) -> list[Dim] | None:
    """Output dims of a Reshape whose target entries are static (or bound)."""
    if static_out is None:
        ctx.conflict("its target does not fit its input even at the exported shape")
        return None

    seen = [s for (s,) in ctx.seen(node.output[0]) if len(s) == len(static_out)]
    grows = frozenset(k for s in seen for k, v in enumerate(static_out) if s[k] != v)

    def splittable(vals: Vals, k: int) -> bool:
        """A spare output 1 may take a symbol of a product of symbols, or of a symbol times a strided size
        seen in the graph (``batch * width/8`` tokens); a leading one, the batch of any product that holds
        it once (:func:`_leading_batch`); any one a reference export shows growing."""
        if is_static(vals):
            return False
        if k in grows:
            return True
        if _monomial(ctx, vals) is not None or (k == 0 and _leading_batch(ctx, vals) is not None):
            return True
        return any(all(x > 0 and v % x == 0 for v, x in zip(vals, s.vals, strict=True))
                   and tuple(v // x for v, x in zip(vals, s.vals, strict=True)) in ctx.dim_sources
                   for s in ctx.symbols.values())

    def atoms(vals: Vals) -> int:
        m = _monomial(ctx, vals)
        return 0 if m is None else sum(m[1].values())

    doubts: list[tuple[int, list[int]]] = []
    groups = _groups(in_shape, static_out, splittable, atoms, doubts, grows)
    if groups is None:
        ctx.conflict(f"cannot align input {[d.s0 for d in in_shape]} with target {static_out}")
        return None
    for i, spare in doubts:
        if all(entries[k].static for k in spare):  # no downstream binding settles them
            ctx.conflict(f"cannot tell whether input dim {i} ({ctx.name(in_shape[i].vals)}, 1 at the exported "
                         f"shape) spreads over target entries {spare}, 1s as well; export at a shape where "
                         f"they are larger")
            return None
    out: list[Vals] = [const(v) for v in static_out]
    carried: dict[int, Dim] = {}  # an output that is one input dim: it keeps that dim's origin
    chosen: set[int] = set()  # outputs whose symbolic factors the grouping or the split decided
    for gi, gk in groups:
        if len(gi) == 1 and len(gk) == 1 and in_shape[gi[0]].origin is not None:
            carried[gk[0]] = in_shape[gi[0]]
        if len(gi) > 1 or len(gk) > 1:
            chosen.update(gk)
        rest = next((j for j, k in enumerate(gk) if entries[k].s0 == -1), None)
        solved = _solve_group(ctx, [in_shape[i].vals for i in gi], [static_out[k] for k in gk], rest,
                              _agrees(seen, gk))
        why, open_ = "", False
        if solved is None:
            solved, why, open_ = _one_grows(ctx, prod([in_shape[i].vals for i in gi]), static_out, gk,
                                            node.output[0])
        # an upstream choice is undone, unless a reading of the split is exact: then it is open, not wrong
        if solved is None and not open_ and _unchoose(ctx, [in_shape[i] for i in gi]):
            return None  # decided again on the next pass
        if solved is None:
            ctx.conflict(why)
            return None
        for k, v in zip(gk, solved, strict=True):
            out[k] = v
    dims = []
    for k, (v, e) in enumerate(zip(out, entries, strict=True)):
        if k in carried:
            dims.append(carried[k])
        elif k in chosen and not is_static(v):
            dims.append(ctx.bound(Origin("choice", node.name, 1, k), v))
        else:
            dims.append(Dim(v, e.origin))
    overridden = [k for k, e in enumerate(entries) if not e.static]
    for k in overridden:
        dims[k] = entries[k]
    overridden += [k for k, d in enumerate(dims) if d.origin is not None and d.origin.kind == "choice"
                   and d.origin in ctx.bindings]
    total = prod([d.vals for d in in_shape])
    if overridden and prod([d.vals for d in dims]) != total:
        fits = []  # the one other output that takes up the difference, keeping its exported size
        for k in (k for k in range(len(dims)) if k not in overridden):
            rest = prod([d.vals for j, d in enumerate(dims) if j != k])
            if all(r and t % r == 0 for r, t in zip(rest, total, strict=True)):
                v = tuple(t // r for r, t in zip(rest, total, strict=True))
                if v[0] == static_out[k] and v != dims[k].vals:
                    fits.append((k, v))
        if len(fits) > 1:  # several could: the one whose group the revised choice split
            fits = [(k, v) for k, v in fits if k in chosen]
        if len(fits) == 1:
            k, v = fits[0]
            dims[k] = Dim(v, Origin("choice", node.name, 1, k))
    if prod([d.vals for d in dims]) != total:
        ctx.conflict(f"output {[ctx.name(d.vals) for d in dims]} does not hold input "
                     f"{[ctx.name(d.vals) for d in in_shape]}")
        return None
    batches = _reference_batches(ctx, node.output[0], len(static_out))
    grown = [k for k, d in enumerate(dims) if d.static and any(s[k] != d.s0 and not (d.s0 == 1 and s[k] in b)
                                                              for s, b in batches)]
    if grown:  # the output still flows on: a binding it meets downstream may make the entry move
        ctx.conflict(f"a reference export changes entry {grown[0]} ({static_out[grown[0]]} at export), which "
                     f"the reading {[ctx.name(d.vals) for d in dims]} keeps static")
    return dims


def _one_grows(ctx: Ctx, total: Vals, static_out: list[int], gk: list[int], out: str, peeled: str | None = None
               ) -> tuple[list[Vals] | None, str, bool]:
    """A group the solvers cannot split: one output grows with the rest and the others are block sizes
    (``[h/4, 4]`` of a space-to-depth, ``[4, n/4]`` of an area split), but shapes alone cannot tell which
    output grows. The shapes reference exports give ``out`` decide (:mod:`winml_dynify.evidence`): the
    output whose size they changed, when they kept the others'. A batch in the group stays in its leading
    output (samples never mix: ``x.view(b * 4, n / 4, c)``), and the rest is read so (``peeled``: the input
    whose axis 0 is that batch, divided out of the leading output's reference sizes; "": a 1 took it).
    Returns the split, or None, the reason and whether a reading is exact at every sample size (the split
    is open, not wrong)."""
    outs = [static_out[k] for k in gk]
    lead = _leading_batch(ctx, total) if gk[0] == 0 and len(outs) > 1 and peeled is None else None
    if lead is not None:
        batch, source = lead
        rest = tuple(t // v for t, v in zip(total, batch, strict=True))
        if outs[0] == 1:  # ``[b*c*h/2, w/2, 2, 2] -> [b, c, hw/4, 4]``: the 1 takes the batch alone
            split, why, open_ = _one_grows(ctx, rest, static_out, gk[1:], out, "")
            return (None if split is None else [batch, *split]), why, open_
        split, why, open_ = _one_grows(ctx, rest, static_out, gk, out, source)
        return (None if split is None else [prod([split[0], batch]), *split[1:]]), why, open_
    lead_at = gk[0]
    if peeled:  # the batch merged into the leading output: its reference sizes without that batch
        seen = [(*s[:lead_at], s[lead_at] // b[0], *s[lead_at + 1:]) if b and b[0] and s[lead_at] % b[0] == 0 else s
                for s, b in ctx.seen(out, peeled) if len(s) == len(static_out)]
    elif peeled is None:  # a leading 1 that is the reference's batch: a batch of 1 that broadcasts, not growth
        seen = [(*s[:lead_at], 1, *s[lead_at + 1:]) if static_out[lead_at] == 1 and s[lead_at] in b else s
                for s, b in _reference_batches(ctx, out, len(static_out))]
    else:  # a leading 1 took the batch: the other outputs' sizes as they are
        seen = [s for (s,) in ctx.seen(out) if len(s) == len(static_out)]
    name = ctx.name(total)
    readings = []
    for j in range(len(outs)):
        block = math.prod(o for k, o in enumerate(outs) if k != j)
        text = ", ".join(f"{name}/{block}" if k == j else str(o) for k, o in enumerate(outs))
        grown = tuple(t // block for t in total) if all(t % block == 0 for t in total) else None
        readings.append((f"[{text}]", grown))
    changed = {j for j, k in enumerate(gk) for s in seen if s[k] != static_out[k]}
    if len(changed) == 1:
        text, grown = readings[next(iter(changed))]
        if grown is not None:
            return [grown if k == next(iter(changed)) else const(o) for k, o in enumerate(outs)], "", False
        return None, (f"{name} splits into {outs} as {text} (a reference export changes entry "
                      f"{gk[next(iter(changed))]} alone), which does not divide at every size"), False
    options = " or ".join(t for t, _ in readings)
    exact = any(g is not None for _, g in readings)
    if seen:
        return None, (f"cannot tell how {name} splits into {outs}: {options}; the reference exports change "
                      f"{'no entry' if not changed else f'entries {sorted(gk[j] for j in changed)}'} of it"), exact
    return None, (f"cannot tell how {name} splits into {outs}: {options}; give --reference, a static export "
                  f"at other sizes, to decide"), exact


def _agrees(seen: list[tuple[int, ...]], gk: list[int]) -> Agrees:
    """A split of the group's outputs ``gk`` agrees with the reference exports' shapes ``seen`` when each
    output it keeps static has its exported size in every one of them."""
    def agrees(split: list[Vals] | tuple[Vals, ...]) -> bool:
        return all(not is_static(v) or s[k] == v[0] for s in seen for k, v in zip(gk, split, strict=True))
    return agrees


def _reference_batches(ctx: Ctx, out: str, rank: int) -> list[tuple[tuple[int, ...], set[int]]]:
    """Each reference's shape of ``out`` with the batch sizes it was exported at: a 1 that becomes the
    reference's batch may be a batch of 1 that broadcasts (a position table built for one sample)."""
    heads = [name for name, _ in _moving_heads(ctx)]
    found = []
    for ref in ctx.evidence:
        if len(ref.get(out, ())) == rank:
            found.append((ref[out], {ref[h][0] for h in heads if ref.get(h)}))
    return found


def _axis_order(ctx: Ctx) -> dict[str, int]:
    """Each symbol's first input axis: symbols keep this order across a split (``batch`` before ``height``)."""
    out: dict[str, int] = {}
    for vi in ctx.graph.input:
        info = ctx.infos.get(vi.name)
        for k, d in enumerate((info.shape or []) if info is not None else []):
            p = None if d.static else ctx.fit(d.vals)
            if p is not None and len(p.symbols) == 1:
                s = next(iter(p.symbols))
                out[s] = min(out.get(s, k), k)
    return out


def _leading_batch(ctx: Ctx, vals: Vals) -> tuple[Vals, str] | None:
    """The batch (a symbol on axis 0 of a graph input) when ``vals`` holds it exactly once, and that input:
    the leading output of a group that merged it takes it, as ``[1, -1, 8]`` does."""
    for name, d in _moving_heads(ctx):
        if ctx.fit(d.vals) is None or len(ctx.fit(d.vals).symbols) != 1:
            continue
        if all(v % b == 0 and (b == 1 or (v // b) % b) for v, b in zip(vals, d.vals, strict=True)):
            return d.vals, name
    return None


def _moving_heads(ctx: Ctx) -> list[tuple[str, Dim]]:
    """The graph inputs whose axis 0 is symbolic, with that dim."""
    out = []
    for vi in ctx.graph.input:
        info = ctx.infos.get(vi.name)
        if info is not None and info.shape and not info.shape[0].static:
            out.append((vi.name, info.shape[0]))
    return out


def _monomial(ctx: Ctx, vals: Vals) -> tuple[int, dict[str, int]] | None:
    """``vals`` as ``c * monomial`` of the symbols, or None (a sum such as ``past + seq``, or no polynomial)."""
    p = ctx.fit(vals)
    return None if p is None else p.monomial()


def _unchoose(ctx: Ctx, dims: list[Dim]) -> bool:
    """A group that cannot split an input dim an upstream Reshape chose to make symbolic: that choice was
    wrong (a literal that equals a symbol's size, ``[-1, 16]`` with 16 hidden units at seq 16), so the dim
    is bound static and the upstream Reshape gives the symbols to its other outputs."""
    chosen = [d for d in dims if not d.static and d.origin is not None and d.origin.kind == "choice"
              and d.origin not in ctx.bindings and d.origin not in ctx.new_bindings]
    if len(chosen) != 1:
        return False
    ctx.bind(chosen[0].origin, const(chosen[0].s0))
    return True


def with_parts(in_shape: list[Dim], out: list[Dim]) -> list[Dim]:
    """Record on each output dim that merges a run of input dims (a flatten) which input dims it holds."""
    groups = _groups(in_shape, [d.s0 for d in out], lambda *_: False)
    if groups is None:
        return out
    out = list(out)
    grouped = {i for gi, _ in groups for i in gi}
    out_grouped = {k for _, gk in groups for k in gk}
    for gi, gk in groups:
        # the pieces: its dims that are not 1 everywhere (a batch of 1 is one), and the bindable 1s (a baked
        # repeat or expand count) just before them when no output 1 stands before the group's outputs to take
        # them, so that a symbol met later binds to the 1, not the other piece (``[1, 4, s, s] -> [4b, s, s]``
        # after ``repeat(1, ...)``: the count, not the weight's axis)
        lead = min(gi)
        k = min(gk)
        if k == 0 or k - 1 in out_grouped:
            while lead > 0 and lead - 1 not in grouped and _bindable_one(in_shape[lead - 1]):
                lead -= 1
        pieces = [in_shape[i] for i in sorted({*gi, *range(lead, min(gi))})
                  if in_shape[i].s0 != 1 or not in_shape[i].static or _bindable_one(in_shape[i])]
        if len(gk) == 1 and len(pieces) > 1 and prod([d.vals for d in pieces]) == out[gk[0]].vals:
            d = out[gk[0]]
            out[gk[0]] = Dim(d.vals, d.origin, tuple(pieces))
    return out


def _bindable_one(d: Dim) -> bool:
    return d.static and d.s0 == 1 and d.origin is not None and d.origin.kind == "entry"


def _groups(in_shape: list[Dim], out: list[int], splittable: Callable[[Vals, int], bool],
            atoms: Callable[[Vals], int] = lambda _: 1, doubts: list[tuple[int, list[int]]] | None = None,
            grows: frozenset[int] = frozenset()) -> list[tuple[list[int], list[int]]] | None:
    """Pair contiguous runs of input and output dims with equal static products; ``atoms`` counts the
    symbol factors of a dim (how many output 1s a symbolic 1 may spread over), ``grows`` the outputs a
    reference export shows growing (a symbolic 1 spreads over those of its gap too). A symbolic 1 that is no
    product of symbols (``h/32 * w/32`` at 1x1) takes one output 1 of its gap; the 1s of that gap nothing
    takes are added to ``doubts`` with it: they may be unit axes or factors of it, which shapes alone
    cannot tell."""
    non1_in = [i for i, d in enumerate(in_shape) if d.s0 != 1]
    non1_out = [k for k, v in enumerate(out) if v != 1]
    groups: list[tuple[list[int], list[int]]] = []
    a = b = 0
    while a < len(non1_in) or b < len(non1_out):
        if a >= len(non1_in) or b >= len(non1_out):
            return None
        gi, gk = [non1_in[a]], [non1_out[b]]
        pin, pout = in_shape[non1_in[a]].s0, out[non1_out[b]]
        a, b = a + 1, b + 1
        while pin != pout:
            if pin < pout:
                if a >= len(non1_in):
                    return None
                gi.append(non1_in[a])
                pin *= in_shape[non1_in[a]].s0
                a += 1
            else:
                if b >= len(non1_out):
                    return None
                gk.append(non1_out[b])
                pout *= out[non1_out[b]]
                b += 1
        groups.append((gi, gk))

    n_main = len(groups)

    def gap(idx: int, side: int) -> float:
        """How many groups of non-1 dims lie before position ``idx`` of the input (side 0) or output (1),
        plus a half inside a group's span (``[-1, 1, 5]``: the 1 is within the split, in no gap)."""
        before = sum(1 for g in groups[:n_main] if max(g[side]) < idx)
        return before + 0.5 * any(min(g[side]) < idx < max(g[side]) for g in groups[:n_main])

    sym_ones = [i for i, d in enumerate(in_shape) if d.s0 == 1 and not d.static]
    out_ones = [k for k, v in enumerate(out) if v == 1]
    used: set[int] = set()
    unsure: list[tuple[int, float]] = []  # (a symbolic 1 with no factors, its gap)
    paired: dict[float, tuple[list[int], list[int]]] = {}  # gap -> the group of its symbolic 1s and output 1s
    for i in sym_ones:
        g = gap(i, 0)
        gap_ones = sorted((k for k in out_ones if k not in used and gap(k, 1) == g), key=lambda k: k not in grows)
        free = sorted(gap_ones[:max(1, atoms(in_shape[i].vals), sum(k in grows for k in gap_ones))])
        if free:  # a product of symbols at 1 (``batch*seq`` at a decode step) splits over the 1s of its gap
            if not atoms(in_shape[i].vals):
                unsure.append((i, g))
            used.update(free)
            paired[g] = ([i], free)
            groups.append(paired[g])
        elif g in paired:  # several symbolic 1s and one output 1 (a flatten of batch and seq at 1)
            paired[g][0].append(i)
        elif groups:
            gi, _ = groups[min(int(g), n_main - 1)]
            gi.append(i)
        else:
            return None
    # A spare output 1 may carry a symbol of the next group (``[1, -1, 8]``: batch), else of the previous one
    # when that group has a single output (seq-first ``[seq*batch] -> [seq, 1]``); a 1 after a split such as
    # ``[-1, 5, 1]`` is a unit axis.
    main = groups[:n_main]  # the groups of non-1 dims, in order (not those pairing a symbol's 1 with a 1)
    for k in out_ones:
        if k in used:
            continue
        after = [j for j, (_, gk) in enumerate(main) if min(gk) > k]
        before = [j for j, (_, gk) in enumerate(main) if max(gk) < k and len(gk) == 1]
        for cand in after[:1] + before[-1:]:
            if splittable(prod([in_shape[i].vals for i in groups[cand][0]]), k):
                groups[cand][1].append(k)
                break
    taken = {k for _, gk in groups for k in gk}
    for i, g in unsure:
        spare = [k for k in out_ones if k not in taken and gap(k, 1) == g]
        if spare and doubts is not None:
            doubts.append((i, spare))
    return [(sorted(gi), sorted(gk)) for gi, gk in groups]


def _split_known(ctx: Ctx, total: Vals, outs: list[int], agrees: Agrees) -> list[Vals] | None:
    """Split a dim that is no product of symbols (``h*w`` of a strided feature map) into sizes already
    seen in the graph, or such sizes and a split of the rest (``[b, 16, h/8]`` of ``2*b*h``), in order: the
    unique way to rebuild ``[h, w]`` from ``h*w``. ``agrees``: the splits a reference export allows."""
    known = [v for v in ctx.dim_sources] + [s.vals for s in ctx.symbols.values()]
    found = []
    for k in range(len(outs)):
        for v in known:
            if v[0] != outs[k] or any(t % x for t, x in zip(total, v, strict=True)):
                continue
            rest = tuple(t // x for t, x in zip(total, v, strict=True))
            others = [o for j, o in enumerate(outs) if j != k]
            if len(others) == 1 and rest[0] == others[0] and (is_static(rest) or rest in known
                                                              or ctx.fit(rest) is not None):
                found.append([v, rest] if k == 0 else [rest, v])
            elif len(others) > 1:
                sub = _solve_group(ctx, [rest], others)
                if sub is not None:
                    found.append([*sub[:k], v, *sub[k:]])
    unique = {tuple(f) for f in found if agrees(f)}
    if len(unique) > 1:  # a symbol apart from a strided size (batch, width/8) rather than their product kept whole
        spread = max(sum(not is_static(v) for v in f) for f in unique)
        unique = {f for f in unique if sum(not is_static(v) for v in f) == spread}
    if len(unique) > 1:  # equal sizes at export (a square image): the order of the first tensor carrying them
        options = {f for f in unique if all(not is_static(v) for v in f)}
        first = next((m for i in ctx.infos.values() if i is not None and i.shape
                      for m in [{f for f in options if _subsequence(list(f), [d.vals for d in i.shape])}] if m), set())
        unique = first if len(first) == 1 else set()
    return list(unique.pop()) if len(unique) == 1 else None


def _subsequence(items: list, seq: list) -> bool:
    """True when ``items`` occur in ``seq`` in order (not necessarily adjacent)."""
    it = iter(seq)
    return all(any(x == y for y in it) for x in items)


def _solve_group(ctx: Ctx, ins: list[Vals], outs: list[int], rest: int | None = None,
                 agrees: Agrees = lambda _: True) -> list[Vals] | None:
    """Assign the symbol factors of the group's product to its outputs. Preferred, in order: outputs whose
    size is exactly their symbols' (``1`` for a batch of 1), symbols in the ``-1`` output ``rest`` (what the
    target leaves to the element count), symbols kept in the order of their input axes (:func:`_axis_order`),
    symbols spread over outputs."""
    total = prod(ins)
    if len(outs) == 1:
        return [total]
    if is_static(total):
        return [const(v) for v in outs]
    f = _monomial(ctx, total)
    if f is None:
        return _split_known(ctx, total, outs, agrees)
    _, powers = f
    order = _axis_order(ctx)
    atoms = sorted((s for s, e in powers.items() for _ in range(e)), key=lambda s: order.get(s, len(order)))
    best, best_score = None, None
    for assign in itertools.product(range(len(outs)), repeat=len(atoms)):
        vals, exact, ok = [], 0, True
        for k, o in enumerate(outs):
            mine = [atoms[j] for j, a in enumerate(assign) if a == k]
            s0 = 1
            for s in mine:
                s0 *= ctx.symbols[s].static
            if o % s0:
                ok = False
                break
            v = const(o // s0)
            for s in mine:
                v = tuple(x * y for x, y in zip(v, ctx.symbols[s].vals, strict=True))
            vals.append(v)
            exact += bool(mine) and o == s0
        if not ok or prod(vals) != total or not agrees(vals):
            continue
        spread = len(set(assign))
        monotone = all(assign[j] <= assign[j + 1] for j in range(len(atoms) - 1))
        in_rest = sum(1 for a in assign if a == rest)
        score = (exact, in_rest, monotone, spread)
        if best_score is None or score > best_score:
            best, best_score = vals, score
    return best if best is not None else _split_known(ctx, total, outs, agrees)



