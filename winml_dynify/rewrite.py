"""Apply the analysis: replace shape-valued inputs and rebuild bound constants, then re-check."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

import onnx

from .analysis import Analysis, Binding, analyse, constants, opset_of
from .dims import Origin, Symbol, Vals, const, describe, factor, make_symbols
from .errors import RefusedError, UsageError
from .realize import Realizer
from .rules import divisor, grids, row_index
from .rules.constants import regenerate
from .rules.shape_inputs import RULES
from .spec import AxisSpec

RANGE_KEY = "winml.dynify.symbol_ranges"


@dataclass
class SymbolRange:
    name: str
    static: int
    min: int = 1
    max: int | None = None
    reason: str = ""
    multiple: int = 1  # valid sizes are multiples of this (strided downsampling then upsampling)


@dataclass
class Rewritten:
    model: onnx.ModelProto
    symbols: dict[str, Symbol]
    rewrites: list[dict] = field(default_factory=list)  # {"rule", "target", "detail"}
    outputs: dict[str, list[int | str | None] | None] = field(default_factory=dict)  # None: rank unknown
    ranges: dict[str, SymbolRange] = field(default_factory=dict)
    # Reshape choices revised by the analysis, keyed by the Reshape's output (node names are temporary)
    choices: dict[tuple[str, int], Binding] = field(default_factory=dict)


def _input_dims(model: onnx.ModelProto, specs: list[AxisSpec], symbols: dict[str, Symbol]) -> dict[str, list[Vals]]:
    chosen = {(s.input, s.axis): s.symbol for s in specs}
    out = {}
    for vi in model.graph.input:
        dims = []
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if (vi.name, k) in chosen:
                dims.append(symbols[chosen[(vi.name, k)]].vals)
            elif d.HasField("dim_value"):
                dims.append(const(d.dim_value))
            else:
                raise UsageError(f"input {vi.name!r} axis {k} is dynamic but unnamed; name it with "
                                 f"--axis {vi.name}:{k}=SYMBOL")
        out[vi.name] = dims
    return out


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed or duplicate-named nodes a temporary unique name (restored before saving)."""
    seen: set[str] = set()
    for i, n in enumerate(graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.name or 'node'}__dynify_{i}"
        seen.add(n.name)


def _prune(graph: onnx.GraphProto) -> int:
    """Drop nodes whose outputs nobody reads (subgraph reads included), and unused initializers, in one
    backward sweep over the topologically ordered nodes. Deletes by index: no message is copied or
    compared. Returns nodes removed."""
    live = {o.name for o in graph.output}
    dead = []
    for k in range(len(graph.node) - 1, -1, -1):
        n = graph.node[k]
        if any(o in live for o in n.output):
            live |= _used_names(n)
        else:
            dead.append(k)
    for k in dead:  # descending
        del graph.node[k]
    for k in [k for k, t in enumerate(graph.initializer) if t.name not in live][::-1]:
        del graph.initializer[k]
    return len(dead)


def analyse_request(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int],
                    multiples: dict[str, int] | None = None,
                    choices: dict[tuple[str, int], Binding] | None = None) -> Analysis:
    """Analyse ``model`` for the requested axes; ``choices`` seeds Reshape choices by output name."""
    symbols = make_symbols(statics, multiples)
    by_output = {n.output[0]: n.name for n in model.graph.node if n.output}
    seed = {Origin("choice", by_output[out], 1, pos): b for (out, pos), b in (choices or {}).items()
            if out in by_output}
    return analyse(model, _input_dims(model, specs, symbols), symbols, seed)


def _with_strides(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int],
                  an: Analysis) -> tuple[Analysis, dict[str, int]]:
    """Spatial symbols that only work at multiples of a stride (a downsample later concatenated with an
    upsample): retry with every non-batch symbol restricted to multiples of 2, 4, ... 64, and keep the
    smallest restriction under which the graph is consistent."""
    spatial = sorted({s.symbol for s in specs if s.axis >= 2})
    k = 2
    while an.conflicts and spatial and k <= 64:
        if all(statics[s] % k == 0 for s in spatial):
            multiples = dict.fromkeys(spatial, k)
            trial = analyse_request(model, specs, statics, multiples)
            if not trial.conflicts:
                return trial, multiples
        k *= 2
    return an, {}


def rewrite(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int], *,
            inplace: bool = False) -> Rewritten:
    """Make the requested axes symbolic and rewrite every baked constant that depends on them.

    Works on a copy of ``model`` unless ``inplace`` (then ``model`` itself becomes the result, and is left
    half-rewritten when the rewrite is refused)."""
    if not inplace:
        model = copy.deepcopy(model)
    graph = model.graph
    name_nodes(graph)
    an = analyse_request(model, specs, statics)
    an, multiples = _with_strides(model, specs, statics, an)
    symbols = an.symbols
    sources = {}
    for s in specs:
        sources.setdefault(s.symbol, (s.input, s.axis))
    rz = Realizer(symbols, sources, an.dim_sources, opset_of(model))
    if an.conflicts:
        _first_unbuildable(model, an, Realizer(symbols, sources, opset=opset_of(model)), specs)
        raise RefusedError(_refusal(an.conflicts, specs, model.graph))
    nodes = {n.name: n for n in graph.node}
    result = Rewritten(model, symbols, choices={(nodes[o.name].output[0], o.pos): b for o, b in an.bindings.items()
                                                if o.kind == "choice"})

    for (node_name, _), need in an.shape_sites.items():
        node = nodes[node_name]
        rule = RULES.get(node.op_type)
        if rule is None:
            continue
        rz.tags = list(node.metadata_props)
        repl = rule[1](node, an, need, rz)
        if repl:
            for k, name in repl.items():
                node.input[k] = name
            dims = [describe(v, symbols) for v in need]
            result.rewrites.append({"rule": f"{node.op_type.lower()}-shape", "target": node_name,
                                    "detail": f"now [{', '.join(dims)}]"})

    for (node_name, k), (count, mode) in an.scalar_sites.items():
        node = nodes[node_name]
        rz.tags = list(node.metadata_props)
        dtype = an.infos[node.input[k]].dtype
        node.input[k] = divisor.realize(count, mode, dtype, rz)
        result.rewrites.append({"rule": "mean-divisor", "target": node_name,
                                "detail": f"divides by {describe(count, symbols)} at run time"})

    for node, sym, row in row_index.find(an, graph):
        rz.tags = list(node.metadata_props)
        node.input[1] = row_index.realize(node.input[1], an.infos[node.input[1]].dtype, symbols[sym].vals, row, rz)
        result.rewrites.append({"rule": "row-index", "target": node.name,
                                "detail": f"adds arange({sym}) * {describe(row, symbols)} to its row index"})

    bound = _bound_constants(an)
    consts = constants(graph)
    tables = {t.name: consts[t.name][0] for t in graph.initializer}
    consumers = defaultdict(list)
    for n in graph.node:
        for k, i in enumerate(n.input):
            consumers[i].append((n, k))
    uppers: list[tuple[Vals, int, str]] = []
    for cname, axes in bound.items():
        lazy, dtype = consts[cname]
        arr = lazy.array
        users = consumers[cname]
        rz.tags = list(users[0][0].metadata_props) if users else []
        try:
            prefix_ok = _sequence_only(model, axes.values(), specs, symbols)
            regen = regenerate(cname, arr, dtype, axes, tables, rz, prefix_ok, partial(grids.layouts, an.infos))
        except RefusedError as e:
            raise RefusedError(f"{e}{_hint(specs, model.graph)}") from None
        uppers += regen.upper + _table_bounds(regen, users, tables)
        for n, k in users:
            n.input[k] = regen.tensor
        result.rewrites.append({"rule": regen.kind, "target": cname,
                                "detail": ", ".join(f"axis {a} = {describe(b.vals, symbols)}"
                                                    for a, b in sorted(axes.items()))})

    new_nodes = _toposort(list(rz.nodes) + list(graph.node), graph)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(rz.inits)
    _prune(graph)
    for n in graph.node:
        n.name = _original_name(n.name)
    for rw in result.rewrites:
        rw["target"] = _original_name(rw["target"])

    result.ranges = _ranges(statics, an.upper, uppers, symbols)
    for s, k in multiples.items():
        result.ranges[s].multiple = result.ranges[s].min = k
    _set_io(model, specs, an, symbols, result)
    return result


def _table_bounds(regen, users: list[tuple[onnx.NodeProto, int]], tables: dict) -> list[tuple[Vals, int, str]]:
    """An arange used as Gather indices into a table (position ids) bounds its symbol by the table's rows."""
    if regen.index is None:
        return []
    vals, base, slope = regen.index
    out = []
    for n, k in users:
        if n.op_type == "Gather" and k == 1 and n.input[0] in tables and slope > 0:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            rows = tables[n.input[0]].shape[axis]
            out.append((vals, (rows - 1 - base) // slope + 1, f"'{n.input[0]}' has {rows} rows"))
    return out


def _sequence_only(model: onnx.ModelProto, bindings, specs: list[AxisSpec], symbols: dict[str, Symbol]) -> bool:
    """True when every binding is a plain symbol that only ever sits on a token axis of a masked model."""
    inputs = {vi.name: vi for vi in model.graph.input}
    masked = {s.symbol for s in specs if "mask" in s.input.lower()}
    for b in bindings:
        names = [s for s, sym in symbols.items() if sym.vals == b.vals]
        if len(names) != 1 or names[0] not in masked:
            return False
        for s in specs:
            if s.symbol == names[0] and (s.axis == 0 or len(inputs[s.input].type.tensor_type.shape.dim) != 2):
                return False
    return True


def pending_sites(model: onnx.ModelProto, an: Analysis) -> list[str]:
    """Shape-valued inputs of an analysed graph that would still need rewriting (empty when done)."""
    nodes = {n.name: n for n in model.graph.node}
    rz = Realizer(an.symbols, {}, opset=opset_of(model))
    out = []
    for (node_name, _), need in an.shape_sites.items():
        node = nodes[node_name]
        rule = RULES.get(node.op_type)
        try:
            pending = rule is not None and rule[1](node, an, need, rz) is not None
        except (RefusedError, KeyError):  # it tried to build a replacement: not done
            pending = True
        if pending:
            out.append(f"node '{node_name}' ({node.op_type}) still needs its shape input rewritten")
    return out


def _used_names(node: onnx.NodeProto) -> set[str]:
    """Inputs of a node, including outer-scope names its subgraphs read."""
    used = set(node.input)
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            inner = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
            used |= {i for n in g.node for i in _used_names(n)} - inner
    return used - {""}


def _toposort(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Stable topological order (new nodes may read tensors computed inside the graph)."""
    import heapq

    ready_names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    waits = [{i for i in _used_names(n) if i in producer and i not in ready_names} for n in nodes]
    users: dict[str, list[int]] = defaultdict(list)
    for k, w in enumerate(waits):
        for i in w:
            users[i].append(k)
    heap = [k for k, w in enumerate(waits) if not w]
    heapq.heapify(heap)
    order = []
    while heap:
        k = heapq.heappop(heap)
        order.append(nodes[k])
        for o in nodes[k].output:
            for u in users.get(o, []):
                waits[u].discard(o)
                if not waits[u]:
                    heapq.heappush(heap, u)
    if len(order) != len(nodes):
        raise RefusedError("a run-time size would have to be read from a tensor computed after its use")
    return order


def _original_name(name: str) -> str:
    """Undo :func:`name_nodes`."""
    if "__dynify_" not in name:
        return name
    base = name.split("__dynify_")[0]
    return "" if base == "node" else base


def _refusal(conflicts: list[str], specs: list[AxisSpec], graph: onnx.GraphProto) -> str:
    head = conflicts[0]
    more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
    return f"cannot make the model dynamic soundly: {head}{more}{_hint(specs, graph)}"


def _hint(specs: list[AxisSpec], graph: onnx.GraphProto) -> str:
    """Inputs left static at the same axis and size as a requested one (usually what the model ties to
    it: an attention mask), else the request without its non-batch symbols."""
    chosen = {(s.input, s.axis) for s in specs}
    inits = {t.name for t in graph.initializer}
    untied = []
    for s in specs:
        size = next(vi.type.tensor_type.shape.dim[s.axis].dim_value for vi in graph.input if vi.name == s.input)
        for vi in graph.input:
            dims = vi.type.tensor_type.shape.dim
            if (vi.name not in inits and (vi.name, s.axis) not in chosen and s.axis < len(dims)
                    and dims[s.axis].dim_value == size and size > 1):
                untied.append(f"--axis {vi.name}:{s.axis}={s.symbol}")
                chosen.add((vi.name, s.axis))
    if untied:
        return f"; inputs of the same size were left static, try also {' '.join(untied)}"
    axis0 = sorted({s.symbol for s in specs if s.axis == 0})
    others = sorted({s.symbol for s in specs} - set(axis0))
    if axis0 and others:
        return f"; try keeping {', '.join(others)} static (only {', '.join(axis0)} dynamic)"
    return ""


def _bound_constants(an: Analysis) -> dict[str, dict[int, Binding]]:
    bound: dict[str, dict[int, Binding]] = defaultdict(dict)
    for origin, b in an.bindings.items():
        if origin.kind == "axis":
            bound[origin.name][origin.index] = b
    return bound


def _first_unbuildable(model: onnx.ModelProto, an: Analysis, rz: Realizer, specs: list[AxisSpec]) -> None:
    """When the analysis found conflicts, a constant that cannot be rebuilt is usually their root cause."""
    consts = constants(model.graph)
    tables = {t.name: consts[t.name][0] for t in model.graph.initializer}
    for cname, axes in _bound_constants(an).items():
        try:
            lazy, dtype = consts[cname]
            prefix_ok = _sequence_only(model, axes.values(), specs, an.symbols)
            regenerate(cname, lazy.array, dtype, axes, tables, rz, prefix_ok, partial(grids.layouts, an.infos))
        except RefusedError as e:
            raise RefusedError(f"{e}{_hint(specs, model.graph)}") from None


def _ranges(statics: dict[str, int], upper: dict[str, tuple[int, str]], extra: list[tuple[Vals, int, str]],
            symbols: dict[str, Symbol]) -> dict[str, SymbolRange]:
    ranges = {s: SymbolRange(s, v) for s, v in statics.items()}
    items = list(upper.items())
    for vals, limit, reason in extra:
        f = factor(vals, symbols)
        if f and len(f[1]) == 1:
            items.append((next(iter(f[1])), (limit // f[0], reason)))
    for sym, (top, reason) in items:
        r = ranges[sym]
        if r.max is None or top < r.max:
            r.max, r.reason = top, reason
    return ranges


def _set_io(model: onnx.ModelProto, specs: list[AxisSpec], an: Analysis, symbols: dict[str, Symbol],
            result: Rewritten) -> None:
    graph = model.graph
    chosen = {(s.input, s.axis): s.symbol for s in specs}
    for vi in graph.input:
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if (vi.name, k) in chosen:
                d.Clear()
                d.dim_param = chosen[(vi.name, k)]
    for vo in graph.output:
        info = an.infos.get(vo.name)
        dims: list[int | str | None] = []
        if info is None or info.shape is None:
            vo.type.tensor_type.ClearField("shape")
            result.outputs[vo.name] = None
            continue
        shape = vo.type.tensor_type.shape
        shape.ClearField("dim")
        for d in info.shape:
            name = describe(d.vals, symbols)
            dim = shape.dim.add()
            if d.static:
                dim.dim_value = d.s0
                dims.append(d.s0)
            elif name != "?":
                dim.dim_param = name
                dims.append(name)
            else:
                dims.append(None)
        result.outputs[vo.name] = dims
    del graph.value_info[:]
