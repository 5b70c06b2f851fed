"""Control flow: shapes through ``Loop``, ``Scan`` and ``If`` bodies, and the values that decide them.

A body is analysed with the pass context of its graph (outer-scope names are visible in it):

* **Loop**: the body's carried inputs take the shapes of the initial values, and each carried output
  must keep them (a zero state ``[1, units]`` whose update is ``[batch, units]`` follows batch); scan
  outputs get a leading trip-count axis. *Counters* are the iteration number and carried scalars that start
  at 0 and grow by 1. A body that reads row ``i`` of an outer tensor (``Gather(x, counter)``) ties the trip
  count to that axis when they are equal at export, and a counter compared with a constant equal to the
  trip count (``Less(i, 16)``) ties that constant too: both are rebuilt from the symbol. A trip count or
  counter bound that could follow a symbol (equal to its exported size) but is tied to none is refused:
  a value that decides control flow is never written as it was.
* **Scan**: scan inputs are sliced along their scan axes (one length for all), states as in Loop, scan
  outputs get that length back.
* **If**: both branches are analysed (and rewritten); a condition known at every sample point selects
  the output dims point by point (a condition computed from shapes), an unknown one needs both branches'
  outputs to agree.

:func:`apply` rewrites what the analysis bound (trip counts, counter bounds) and gives the bodies'
inputs and outputs the new dims.
"""

from __future__ import annotations

import numpy as np
import onnx

from .context import Analysis, Ctx, TInfo, bodies
from .dims import N_POINTS, Dim, Origin, Symbol, Vals, const, describe, is_static
from .ops import op
from .realize import Realizer

_COMPARE = {"Less": 1, "Greater": 0, "LessOrEqual": 1, "GreaterOrEqual": 0}  # op -> input of the bound
_PASS = {"Identity", "Cast"}
NO_COUNT = 2**31 - 1  # a trip count this large is a while loop's "no limit" (its condition decides)


def _attr_graph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == name)


def _state(info: TInfo | None) -> TInfo | None:
    """What a body input knows about a value that changes from one iteration to the next: its shape."""
    return None if info is None else TInfo(info.shape, None, None, info.dtype)


def _seed(ctx: Ctx, vi: onnx.ValueInfoProto, info: TInfo | None) -> None:
    if info is not None:
        ctx.infos[vi.name] = info


def _scalar(elem: int) -> TInfo:
    return TInfo([], None, None, elem)


def _through(body: onnx.GraphProto, names: set[str]) -> set[str]:
    """``names`` and every tensor an Identity or Cast of them yields, in body order."""
    out = set(names)
    for n in body.node:
        if n.op_type in _PASS and n.input[0] in out:
            out.add(n.output[0])
    return out


def _shifted(ctx: Ctx, body: onnx.GraphProto, names: set[str]) -> set[str]:
    """``names`` and every tensor that is one of them plus or minus a static value (``i + 1``), or an
    Identity or Cast of one, in body order."""
    out = set(names)
    for n in body.node:
        if n.op_type in _PASS and n.input[0] in out:
            out.add(n.output[0])
        elif (n.op_type in ("Add", "Sub") and n.input[0] in out) or (n.op_type == "Add" and n.input[1] in out):
            other = ctx.info(n.input[1] if n.input[0] in out else n.input[0])
            if other is not None and other.value is not None and all(is_static(v) for v in other.value):
                out.add(n.output[0])
    return out


def _cone(body: onnx.GraphProto, name: str) -> set[str]:
    """Names of the body nodes whose outputs the tensor ``name`` is computed from."""
    made = {o: n for n in body.node for o in n.output}
    seen: set[str] = set()
    todo = [name]
    while todo:
        n = made.get(todo.pop())
        if n is not None and n.name not in seen:
            seen.add(n.name)
            todo += list(n.input)
    return seen


def _counters(ctx: Ctx, node: onnx.NodeProto, body: onnx.GraphProto) -> set[str]:
    """Body tensors holding the iteration number: input 0, and carried scalars that start at 0 and are
    incremented by 1 (tf2onnx's loop counters), with their Identity/Cast copies."""
    names = {body.input[0].name}
    made = {o: n for n in body.node for o in n.output}
    for k, vi in enumerate(body.input[2:]):
        init = ctx.info(node.input[2 + k]) if len(node.input) > 2 + k else None
        if init is None or init.value is None or len(init.value) != 1 or init.value[0] != const(0):
            continue
        out = body.output[1 + k].name
        step = made.get(out)
        while step is not None and step.op_type in _PASS:
            step = made.get(step.input[0])
        src = _through(body, {vi.name})
        if step is None or step.op_type != "Add" or not src & set(step.input):
            continue
        other = ctx.info(next((i for i in step.input if i not in src), ""))
        if other is not None and other.value is not None and other.value == [const(1)]:
            names.add(vi.name)
    return _shifted(ctx, body, names)


def _outer_rows(ctx: Ctx, body: onnx.GraphProto, counters: set[str]) -> list[Dim]:
    """Axes of outer tensors the body reads one row per iteration (``Gather(x, counter)``)."""
    inner = {o for n in body.node for o in n.output} | {i.name for i in body.input} | {t.name for t in body.initializer}
    out = []
    for n in body.node:
        if n.op_type == "Gather" and n.input[1] in counters and n.input[0] not in inner:
            x = ctx.info(n.input[0])
            if x is not None and x.shape is not None:
                axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                out.append(x.shape[axis + len(x.shape) if axis < 0 else axis])
    return out


def _bounds(ctx: Ctx, body: onnx.GraphProto, counters: set[str]) -> list[tuple[onnx.NodeProto, int, Dim, bool]]:
    """Constants compared with a counter (``Less(i + 1, 16)``) or deciding the loop condition: (node, input
    index, the constant as a dim, whether it is compared with a counter)."""
    out = []
    cone = _cone(body, body.output[0].name)
    for n in body.node:
        k = _COMPARE.get(n.op_type)
        if k is None or (n.input[1 - k] not in counters and n.name not in cone):
            continue
        c = ctx.info(n.input[k])
        if c is None or c.value is None or len(c.value) != 1 or not is_static(c.value[0]):
            continue
        v = c.value[0][0]
        if float(v).is_integer():
            dim = ctx.bound(Origin("entry", n.name, k, 0), const(int(v)))
            out.append((n, k, dim, n.input[1 - k] in counters))
    return out


def _could_follow(ctx: Ctx, d: Dim, touched: list[Dim]) -> str | None:
    """The symbol a static control value equals at export when the loop handles symbolic tensors."""
    if not d.static or not any(not t.static for t in touched):
        return None
    return next((s.name for s in ctx.symbols.values() if s.static == d.s0), None)


def _tie(ctx: Ctx, trip: Dim | None, rows: list[Dim], bounds: list[tuple[onnx.NodeProto, int, Dim, bool]],
         touched: list[Dim]) -> Dim | None:
    """Tie the trip count and the counter bounds to the rows the body reads (symbolic or static: a fixed
    count); refuse the ones that equal a symbol at export but are tied to nothing. Returns the trip count."""
    tied = False
    for r in rows:
        if trip is not None and trip.s0 == r.s0:
            trip, tied = ctx.equate(trip, r), True
    extent = (trip if trip is not None and (tied or not trip.static)
              else next((r for r in rows if not r.static), rows[0] if rows else None))
    for n, _k, b, counted in bounds:
        op_le = n.op_type in ("LessOrEqual", "GreaterOrEqual")
        if counted and extent is not None and b.s0 + op_le == extent.s0:
            if op_le:
                ctx.conflict(f"loop bound in '{n.name}' is {ctx.name(extent.vals)} - 1 at export; it cannot be "
                             "rebuilt")
            else:
                ctx.equate(b, extent)
            continue
        sym = _could_follow(ctx, b, touched)
        if sym is not None:
            ctx.conflict(f"loop bound {b.s0} in '{n.name}' equals {sym} at export and nothing ties it to "
                         f"{sym} or to a fixed count: it decides how often the loop runs")
    if trip is not None:
        trip = ctx.bound(trip.origin, trip.vals) if trip.origin is not None else trip
        sym = None if tied else _could_follow(ctx, trip, touched)
        if sym is not None:
            ctx.conflict(f"trip count {trip.s0} equals {sym} at export and the body reads no row of a tensor "
                         f"along {sym}: whether it follows {sym} cannot be told")
    return trip


def _carry(ctx: Ctx, given: TInfo | None, got: TInfo | None, what: str) -> TInfo | None:
    """A carried value must keep its shape from one iteration to the next."""
    if given is None or got is None or given.shape is None or got.shape is None:
        return got
    if len(given.shape) != len(got.shape):
        ctx.conflict(f"{what} changes rank from {len(given.shape)} to {len(got.shape)} in the body")
        return got
    return TInfo([ctx.equate(a, b) for a, b in zip(given.shape, got.shape, strict=True)], None, None, got.dtype)


def _touched(ctx: Ctx, node: onnx.NodeProto) -> list[Dim]:
    """Dims of the tensors a control-flow node reads, outer-scope reads of its bodies included."""
    dims = []
    for name in outer_reads(node):
        info = ctx.info(name)
        if info is not None and info.shape is not None:
            dims += info.shape
    return dims


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """Inputs of a node, including outer-scope names its bodies read."""
    used = set(node.input)
    for g in bodies(node):
        inner = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
        used |= {i for n in g.node for i in outer_reads(n)} - inner
    return used - {""}


@op("Loop")
def _loop(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    body = _attr_graph(node, "body")
    m = ins[0] if node.input and node.input[0] else None
    trip = None
    if m is not None and m.value is not None and m.value[0][0] < NO_COUNT:
        v = m.value[0]
        trip = ctx.bound(Origin("entry", node.name, 0, 0), v) if is_static(v) else Dim(v)
    n_carried = len(node.input) - 2
    _seed(ctx, body.input[0], _scalar(onnx.TensorProto.INT64))
    _seed(ctx, body.input[1], _scalar(onnx.TensorProto.BOOL))
    for k in range(n_carried):
        _seed(ctx, body.input[2 + k], _state(ins[2 + k]))
    counters = _counters(ctx, node, body)
    ctx.run_body(body.node)
    ctx.node = node
    trip = _tie(ctx, trip, _outer_rows(ctx, body, counters), _bounds(ctx, body, counters), _touched(ctx, node))
    outs: list[TInfo | None] = []
    for k in range(n_carried):
        outs.append(_carry(ctx, ins[2 + k], ctx.info(body.output[1 + k].name), f"carried value {k}"))
    for vo in body.output[1 + n_carried:]:
        got = ctx.info(vo.name)
        outs.append(None if got is None or got.shape is None or trip is None
                    else TInfo([trip, *got.shape], None, None, got.dtype))
    return outs


@op("Scan")
def _scan(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    if ctx.opset < 9:  # opset 8 Scan has a batch axis and sequence lengths: left to onnx
        return [None] * len(node.output)
    body = _attr_graph(node, "body")
    k_in = ctx.attr("num_scan_inputs")
    n_state = len(node.input) - k_in
    in_axes = list(ctx.attr("scan_input_axes") or [0] * k_in)
    out_axes = list(ctx.attr("scan_output_axes") or [0] * (len(body.output) - n_state))
    length = None
    for j in range(k_in):
        x = ins[n_state + j]
        a = in_axes[j] + len(x.shape) if in_axes[j] < 0 else in_axes[j]
        length = x.shape[a] if length is None else ctx.equate(length, x.shape[a])
        _seed(ctx, body.input[n_state + j], TInfo(x.shape[:a] + x.shape[a + 1:], None, None, x.dtype))
    for k in range(n_state):
        _seed(ctx, body.input[k], _state(ins[k]))
    ctx.run_body(body.node)
    ctx.node = node
    outs: list[TInfo | None] = [_carry(ctx, ins[k], ctx.info(body.output[k].name), f"scan state {k}")
                                for k in range(n_state)]
    for j, vo in enumerate(body.output[n_state:]):
        got = ctx.info(vo.name)
        if got is None or got.shape is None or length is None:
            outs.append(None)
            continue
        a = out_axes[j] + len(got.shape) + 1 if out_axes[j] < 0 else out_axes[j]
        outs.append(TInfo([*got.shape[:a], length, *got.shape[a:]], None, None, got.dtype))
    return outs


@op("If")
def _if(ctx: Ctx, node: onnx.NodeProto, ins: list[TInfo | None]) -> list[TInfo | None]:
    cond = ins[0]
    branches = [_attr_graph(node, "then_branch"), _attr_graph(node, "else_branch")]
    picks = None if cond is None or cond.value is None else tuple(bool(v) for v in cond.value[0])
    for g in branches:  # a branch no sample point takes may be taken at another size: both are rewritten
        ctx.run_body(g.node)
    taken = [g for g, want in zip(branches, (True, False), strict=True) if picks is None or want in picks]
    ctx.node = node
    outs: list[TInfo | None] = []
    for k in range(len(node.output)):
        got = {id(g): ctx.info(g.output[k].name) for g in taken}
        if any(i is None or i.shape is None for i in got.values()):
            outs.append(None)
            continue
        if len(taken) == 1:
            outs.append(next(iter(got.values())))
            continue
        then, other = got[id(branches[0])], got[id(branches[1])]
        if len(then.shape) != len(other.shape):
            ctx.conflict(f"its branches give output {k} ranks {len(then.shape)} and {len(other.shape)}")
            outs.append(None)
        elif picks is not None:  # decided per point: each point takes its branch's dims
            outs.append(TInfo([Dim(tuple((a if picks[p] else b).vals[p] for p in range(N_POINTS)))
                               for a, b in zip(then.shape, other.shape, strict=True)], None, None, then.dtype))
        else:
            outs.append(TInfo([ctx.equate(a, b) for a, b in zip(then.shape, other.shape, strict=True)],
                              None, None, then.dtype))
    return outs


# -- rewrite -----------------------------------------------------------------------------------------
def control_sites(an: Analysis, nodes: dict[str, onnx.NodeProto]) -> list[tuple[onnx.NodeProto, int, Vals]]:
    """Bound trip counts and counter bounds: (node, input index, the dim it must hold)."""
    out = []
    for o, b in an.bindings.items():
        n = nodes.get(o.name)
        if o.kind == "entry" and n is not None and ((n.op_type == "Loop" and o.index == 0) or n.op_type in _COMPARE):
            out.append((n, o.index, b.vals))
    return out


def apply(an: Analysis, nodes: dict[str, onnx.NodeProto], rz: Realizer, rewrites: list[dict]) -> None:
    """Rebuild the bound control values from their symbols (in the outer graph, read by the body)."""
    for n, k, vals in control_sites(an, nodes):
        rz.tags = list(n.metadata_props)
        info = an.infos[n.input[k]]
        value = rz.scalar(vals)
        if info.shape:
            value = rz.node("Reshape", [value, rz.const(np.array([1] * len(info.shape), np.int64))])
        if info.dtype != onnx.TensorProto.INT64:
            value = rz.node("Cast", [value], to=info.dtype)
        n.input[k] = value
        what = "trip count" if n.op_type == "Loop" else "loop bound"
        rewrites.append({"rule": "loop-count", "target": n.name,
                         "detail": f"{what} is {describe(vals, an.symbols)} at run time"})


def retype_bodies(graph: onnx.GraphProto, an: Analysis, symbols: dict[str, Symbol]) -> None:
    """Give every body's inputs and outputs the dims the analysis derived (no shape where unknown) and
    drop its value_info: the exported shapes are stale."""
    for n in graph.node:
        for body in bodies(n):
            for vi in list(body.input) + list(body.output):
                set_shape(vi, an.infos.get(vi.name), symbols)
            del body.value_info[:]
            retype_bodies(body, an, symbols)


def set_shape(vi: onnx.ValueInfoProto, info: TInfo | None, symbols: dict[str, Symbol]) -> list[int | str | None] | None:
    """Write the analysed dims of a tensor into its value info: static sizes, symbol names, or an unnamed
    dim; no shape when the rank is unknown (values that are no tensors are left alone). Returns the dims
    written."""
    if not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    if info is None or info.shape is None:
        tt.ClearField("shape")
        return None
    tt.shape.ClearField("dim")
    dims: list[int | str | None] = []
    for d in info.shape:
        dim = tt.shape.dim.add()
        name = describe(d.vals, symbols)
        if d.static:
            dim.dim_value = d.s0
            dims.append(d.s0)
        elif name != "?":
            dim.dim_param = name
            dims.append(name)
        else:
            dims.append(None)
    return dims
