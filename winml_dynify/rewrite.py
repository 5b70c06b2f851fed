"""Apply the analysis: replace shape-valued inputs and rebuild bound constants, then re-check."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

import onnx

from . import subgraphs
from .analysis import analyse
from .context import Analysis, Binding, all_nodes, bodies, constant_names, constants, opset_of
from .dims import Origin, Poly, Symbol, Vals, const, describe, factor, make_symbols
from .errors import RefusedError, UsageError
from .evidence import Evidence
from .realize import Realizer
from .rules import (
    divisor,
    flat_gathers,
    grids,
    identities,
    reshape_chains,
    reshape_targets,
    row_index,
    shared_shapes,
    static_shapes,
    tables,
    unit_axes,
)
from .rules.constants import covered, regenerate
from .rules.positions import graph_sizes, shifted_range
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
    equals: Poly | None = None  # the graph requires the symbol to equal this polynomial of the others
    # sizes of several symbols that have a maximum (``past + seq <= 48``), checked at run time
    jointly: list[tuple[Poly, int]] = field(default_factory=list)

    def allows(self, values: dict[str, int]) -> bool:
        """Whether the symbol values (all the symbols of its joint bounds) satisfy those bounds."""
        return all(p.evaluate(values) <= limit for p, limit in self.jointly)

    def extras(self) -> dict[str, str | list[str]]:
        """What the range's metadata states besides min, max and multiple."""
        return ({"equals": str(self.equals)} if self.equals is not None else {}) | (
            {"at_most": [f"{p} <= {limit}" for p, limit in self.jointly]} if self.jointly else {})


@dataclass
class Rewritten:
    model: onnx.ModelProto
    symbols: dict[str, Symbol]
    rewrites: list[dict] = field(default_factory=list)  # {"rule", "target", "detail"}
    outputs: dict[str, list[int | str | None] | None] = field(default_factory=dict)  # None: rank unknown
    ranges: dict[str, SymbolRange] = field(default_factory=dict)
    # Reshape choices revised by the analysis, keyed by the Reshape's output (node names are temporary)
    choices: dict[tuple[str, int], Binding] = field(default_factory=dict)
    bounds: list[tuple[Poly, int, str]] = field(default_factory=list)  # sizes of several symbols: (size, max, why)
    notes: list[str] = field(default_factory=list)  # advice to the user (a --max that would pay)


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
    """Give unnamed or duplicate-named nodes (bodies included) a temporary unique name (restored before
    saving)."""
    seen: set[str] = set()
    for i, n in enumerate(all_nodes(graph)):
        if not n.name or n.name in seen:
            n.name = f"{n.name or 'node'}__dynify_{i}"
        seen.add(n.name)


def _prune(graph: onnx.GraphProto) -> int:
    """Drop nodes whose outputs nobody reads (subgraph reads included), and unused initializers, in one
    backward sweep over the topologically ordered nodes, then in every body. Deletes by index: no message
    is copied or compared. Returns nodes removed."""
    live = {o.name for o in graph.output}
    dead = []
    for k in range(len(graph.node) - 1, -1, -1):
        n = graph.node[k]
        if any(o in live for o in n.output):
            live |= subgraphs.outer_reads(n)
        else:
            dead.append(k)
    for k in dead:  # descending
        del graph.node[k]
    for k in [k for k, t in enumerate(graph.initializer) if t.name not in live][::-1]:
        del graph.initializer[k]
    return len(dead) + sum(_prune(body) for n in graph.node for body in bodies(n))


def analyse_request(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int],
                    multiples: dict[str, int] | None = None,
                    choices: dict[tuple[str, int], Binding] | None = None,
                    evidence: Evidence | None = None) -> Analysis:
    """Analyse ``model`` for the requested axes; ``choices`` seeds Reshape choices by output name,
    ``evidence`` gives the tensor shapes of reference exports."""
    symbols = make_symbols(statics, multiples)
    by_output = {n.output[0]: n.name for n in all_nodes(model.graph) if n.output}
    seed = {Origin("choice", by_output[out], 1, pos): b for (out, pos), b in (choices or {}).items()
            if out in by_output}
    return analyse(model, _input_dims(model, specs, symbols), symbols, seed, evidence)


def _with_strides(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int],
                  an: Analysis, evidence: Evidence) -> tuple[Analysis, dict[str, int]]:
    """Spatial symbols that only work at multiples of a stride (a downsample later concatenated with an
    upsample): retry with every non-batch symbol restricted to multiples of 2, 4, ... 64, and keep the
    smallest restriction under which the graph is consistent. When none is, the first restriction under
    which a conflict is one a reference export decides gives the refusal (it names what to give)."""
    spatial = sorted({s.symbol for s in specs if s.axis >= 2})
    k = 2
    asks = None  # the first restriction under which a conflict left is one a reference export decides
    while an.conflicts and spatial and k <= 64:
        if all(statics[s] % k == 0 for s in spatial):
            multiples = dict.fromkeys(spatial, k)
            trial = analyse_request(model, specs, statics, multiples, evidence=evidence)
            if not trial.conflicts:
                return trial, multiples
            if asks is None and any("give --reference" in c for c in trial.conflicts):
                asks = trial
        k *= 2
    return asks or an, {}


def rewrite(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int], *,
            inplace: bool = False, maxima: dict[str, int] | None = None,
            evidence: Evidence | None = None) -> Rewritten:
    """Make the requested axes symbolic and rewrite every baked constant that depends on them.

    Works on a copy of ``model`` unless ``inplace`` (then ``model`` itself becomes the result, and is left
    half-rewritten when the rewrite is refused). ``maxima``: the largest size of a symbol the user
    deploys (``--max``), where the graph bounds it no lower. ``evidence``: what reference exports show
    (:func:`winml_dynify.evidence.tensor_shapes`), to decide splits the shapes leave open."""
    if not inplace:
        model = copy.deepcopy(model)
    graph = model.graph
    name_nodes(graph)
    evidence = evidence or []
    an = analyse_request(model, specs, statics, evidence=evidence)
    an = unit_axes.settle_reading(an, model, lambda seeds: analyse_request(model, specs, statics, choices=seeds,
                                                                          evidence=evidence))
    an, multiples = _with_strides(model, specs, statics, an, evidence)
    symbols = an.symbols
    sources = {}
    for s in specs:
        sources.setdefault(s.symbol, (s.input, s.axis))
    taken = {t for n in all_nodes(graph) for t in (*n.output, _original_name(n.name))} | {
        t.name for t in graph.initializer} | {vi.name for vi in graph.input}
    rz = Realizer(symbols, sources, an.dim_sources, opset_of(model), an.relations, taken)
    if an.conflicts:
        _first_unbuildable(model, an, Realizer(symbols, sources, an.dim_sources, opset_of(model), an.relations), specs)
        raise RefusedError(_refusal(an.conflicts, specs, an.ties, model.graph))
    nodes = {n.name: n for n in all_nodes(graph)}
    result = Rewritten(model, symbols, choices={(nodes[o.name].output[0], o.pos): b for o, b in an.bindings.items()
                                                if o.kind == "choice"})

    rz.order = {o: k for k, n in enumerate(graph.node) for o in n.output}
    result.rewrites += unit_axes.apply_edits(an, nodes, opset_of(model), rz)
    for (node_name, _), need in an.shape_sites.items():
        node = nodes[node_name]
        rule = RULES.get(node.op_type)
        if rule is None:
            continue
        rz.tags = list(node.metadata_props)
        rz.site = rz.order.get(node.output[0]) if node.output else None
        repl = rule[1](node, an, need, rz)
        if repl:
            for k, name in repl.items():
                node.input[k] = name
            dims = [describe(v, symbols) for v in need]
            result.rewrites.append({"rule": f"{node.op_type.lower()}-shape", "target": node_name,
                                    "detail": f"now [{', '.join(dims)}]"})

    rz.site = None
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

    subgraphs.apply(an, nodes, rz, result.rewrites)

    bound = _bound_constants(an)
    consts = constants(graph)
    tables = {t.name: consts[t.name][0] for t in graph.initializer}
    consumers = defaultdict(list)
    for n in all_nodes(graph):
        for k, i in enumerate(n.input):
            consumers[i].append((n, k))
    uppers: list[tuple[Vals, int, str]] = []
    sizes = graph_sizes(an.infos, symbols)
    lengths_at_1 = {sp.symbol for sp in specs if sp.axis != 0 and symbols[sp.symbol].static == 1}
    for cname in [] if lengths_at_1 else _lone_positions(graph, consts, consumers, bound, tables):
        bound[cname] = {}  # a decode step's one position: tried as a shifted range of one element
    for cname, axes in bound.items():
        lazy, dtype = consts[cname]
        arr = lazy.array
        users = consumers[cname]
        rz.tags = list(users[0][0].metadata_props) if users else []
        table = next((n.input[0] for n, k in users if n.op_type == "Gather" and k == 1 and n.input[0] in tables), None)
        rows = tables[table].shape[0] if table is not None else None
        shifted = shifted_range(arr, dtype, axes, sizes, symbols, rz, rows)
        if shifted is not None:
            regen, start, end = shifted
            if rows is not None:
                result.bounds.append((end, rows, f"'{table}' has {rows} rows"))
            for n, k in users:
                n.input[k] = regen.tensor
            result.rewrites.append({"rule": regen.kind, "target": cname,
                                    "detail": f"arange({start}, {end})"})
            continue
        if not axes:  # a lone constant that is no shifted position: it stays
            continue
        try:
            prefix_ok = _sequence_only(model, axes.values(), specs, symbols)
            regen = regenerate(cname, arr, dtype, axes, tables, rz, prefix_ok, partial(grids.layouts, an.infos))
        except RefusedError as e:
            raise RefusedError(f"{e}{_hint(specs, an.ties, model.graph)}") from None
        uppers += regen.upper + _table_bounds(regen, users, tables)
        for n, k in users:
            n.input[k] = regen.unexpanded if regen.unexpanded and covered(n, k, an.infos) else regen.tensor
        result.rewrites.append({"rule": regen.kind, "target": cname,
                                "detail": ", ".join(f"axis {a} = {describe(b.vals, symbols)}"
                                                    for a, b in sorted(axes.items()))})

    for s in an.relations:  # the input carrying a derived symbol is read only through the checks
        inp = sources[s][0]
        rz.tags = []
        guarded = rz.guard(inp)
        for n in graph.node:
            n.input[:] = [guarded if i == inp else i for i in n.input]
    chains = reshape_chains.collapse(graph, an.infos)
    if chains:
        result.rewrites.append({"rule": "reshape-chain", "target": "graph",
                                "detail": f"{chains} chains of Reshapes became one Reshape of their start, or none"})
    targets = reshape_targets.constant_targets(graph, an.infos)
    if targets:
        result.rewrites.append({"rule": "constant-reshape-target", "target": "graph",
                                "detail": f"{targets} computed Reshape targets became constants with 0/-1 entries"})
    folded = static_shapes.fold(graph, an.infos)
    if folded:
        result.rewrites.append({"rule": "static-shape", "target": "graph",
                                "detail": f"{folded} shape computations the symbols do not reach became constants"})
    dropped = identities.drop(graph, an.infos)
    if dropped:
        result.rewrites.append({"rule": "identity", "target": "graph",
                                "detail": f"{dropped} And/Or with an identity constant read their other operand"})
    shared = shared_shapes.share(graph, an.infos, symbols, rz)
    if shared:
        result.rewrites.append({"rule": "shared-shape", "target": "graph",
                                "detail": f"{shared} reads of a symbol's size use its shared source"})
    new_nodes = _toposort(list(rz.nodes) + list(graph.node), graph)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(rz.inits)
    _prune(graph)
    subgraphs.retype_bodies(graph, an, symbols)
    for n in all_nodes(graph):
        n.name = _original_name(n.name)
    for rw in result.rewrites:
        rw["target"] = _original_name(rw["target"])

    result.ranges = _ranges(statics, an.upper, uppers, symbols, result.bounds, an.lower)
    for s, top in (maxima or {}).items():  # the user's largest size, where the graph allows no larger one
        r = result.ranges[s]
        if r.max is None or top < r.max:
            r.max, r.reason = top, "--max"
    for s, expr in an.relations.items():
        result.ranges[s].equals = expr
        result.rewrites.append({"rule": "relation-check", "target": s,
                                "detail": f"checks {s} == {expr} at run time"})
    for s, k in multiples.items():
        r = result.ranges[s]
        r.multiple, r.min = k, max(k, -(-r.min // k) * k)
    _set_io(model, specs, an, symbols, result)
    _lean(model, specs, statics, result, multiples, sources)
    return result


def _lean(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int], result: Rewritten,
          multiples: dict[str, int], sources: dict[str, tuple[str, int]]) -> None:
    """The rules that read the rewritten graph itself, analysed again (the rewrite's new nodes have no
    infos yet) when it has something for them: :mod:`rules.flat_gathers` (a Gather of a flattened tensor
    at a computed index) and :mod:`rules.tables` (a Range, and a symbol with a maximum). A symbol with no
    maximum whose tables would pay gets a note that says so."""
    graph = model.graph
    flattened = {n.output[0] for n in graph.node if n.op_type in ("Flatten", "Reshape")}
    consts = constant_names(graph)
    gathers = any(n.op_type == "Gather" and n.input[0] in flattened and n.input[1] not in consts for n in graph.node)
    tops = {s: r.max for s, r in result.ranges.items() if r.max is not None and r.equals is None}
    open_ended = [s for s, r in result.ranges.items() if r.max is None and r.equals is None]
    has_range = any(n.op_type == "Range" for n in graph.node)
    ranges = bool(tops) and has_range
    if not (gathers or (has_range and (tops or open_ended))):
        return
    name_nodes(graph)
    try:
        an = analyse_request(model, specs, statics, multiples, result.choices)
        if an.conflicts:
            return
        count = flat_gathers.simplify(graph, an.infos, opset_of(model)) if gathers else 0
        if count:
            result.rewrites.append({"rule": "flat-gather", "target": "graph",
                                    "detail": f"{count} Gathers of a flattened tensor at its own positions "
                                              "became the tensor, or at a row's ArgMax a GatherND"})
            _prune(graph)
        taken = {t for n in all_nodes(graph) for t in n.output} | {t.name for t in graph.initializer}
        rz = Realizer(an.symbols, sources, an.dim_sources, opset_of(model), an.relations, taken)
        base = tables.gain(graph, an.infos, an.symbols, tops) if tops and open_ended and has_range else 0
        for s in open_ended if has_range else []:  # counted at the exported size: what --max would add
            net = tables.gain(graph, an.infos, an.symbols, {**tops, s: an.symbols[s].static}) - base
            if net >= tables.MIN_GAIN:
                result.notes.append(f"{net} run-time nodes compute from {s} positions alone; --max {s}=N (the "
                                    f"largest {s} deployed) would store them as tables, read back at each call")
        count = tables.tabulate(model, an.infos, an.symbols, tops, rz) if ranges else 0
        if count:
            result.rewrites.append({"rule": "position-table", "target": "graph",
                                    "detail": f"{count} position-only computations read from tables at "
                                              f"{', '.join(f'{s} = {n}' for s, n in tops.items())}"})
            new_nodes = _toposort(list(rz.nodes) + list(graph.node), graph)
            del graph.node[:]
            graph.node.extend(new_nodes)
            graph.initializer.extend(rz.inits)
            _prune(graph)
    finally:
        for n in all_nodes(graph):
            n.name = _original_name(n.name)


_COMPARISONS = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual"}


def _lone_positions(graph: onnx.GraphProto, consts, consumers, bound, tables) -> list[str]:
    """Constants of one element, bound to no symbol, that index a table (Gather), are compared (a causal
    mask's row index) or multiply rotary frequencies (MatMul) in the top-level graph: a position id folded
    at a decode step (a loop body's bound is the subgraph rules' to judge). Not tried when a length symbol
    was exported at 1: the one position may then stand for ``seq`` of them."""
    top = {n.name for n in graph.node}  # unique: every node was named by name_nodes

    def positional(n: onnx.NodeProto, k: int) -> bool:
        return n.name in top and ((n.op_type == "Gather" and k == 1 and n.input[0] in tables)
                                 or n.op_type in _COMPARISONS or n.op_type == "MatMul")
    return [c for c, (lazy, _) in consts.items()
            if c not in bound and lazy.size == 1 and consumers[c] and all(positional(n, k) for n, k in consumers[c])]


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
    nodes = {n.name: n for n in all_nodes(model.graph)}
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


def _toposort(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Stable topological order (new nodes may read tensors computed inside the graph)."""
    import heapq

    ready_names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    waits = [{i for i in subgraphs.outer_reads(n) if i in producer and i not in ready_names} for n in nodes]
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


def _refusal(conflicts: list[str], specs: list[AxisSpec], ties: list[tuple[str, int, str]],
             graph: onnx.GraphProto) -> str:
    head = conflicts[0]
    more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
    asks = next((c for c in conflicts[1:] if "give --reference" in c and "give --reference" not in head), None)
    if asks is not None:  # the first conflict may follow from a reading only a reference decides
        more += f"; {asks.split(': ', 1)[0]} reads a size in a way only a --reference export decides"
    return f"cannot make the model dynamic soundly: {head}{more}{_hint(specs, ties, graph)}"


def _hint(specs: list[AxisSpec], ties: list[tuple[str, int, str]], graph: onnx.GraphProto) -> str:
    """Input axes left static that should follow a requested symbol: those the data flow ties to it, and
    those of the same layout (rank and element type) as an input carrying it, at the same axis and size (an
    attention mask beside the token ids); an axis that merely has the same size (the heads axis of a KV
    cache equal to seq) is never suggested. Else the request without its non-batch symbols."""
    chosen = {(s.input, s.axis) for s in specs}
    symbols = {s.symbol for s in specs}
    types = {vi.name: vi.type.tensor_type for vi in graph.input if vi.name not in {t.name for t in graph.initializer}}
    want = {(name, axis): dim for name, axis, dim in ties if dim in symbols and (name, axis) not in chosen}
    for s in specs:
        own = types[s.input]
        size = own.shape.dim[s.axis].dim_value
        for name, tt in types.items():
            dims = tt.shape.dim
            if ((name, s.axis) not in chosen and len(dims) == len(own.shape.dim) and tt.elem_type == own.elem_type
                    and dims[s.axis].dim_value == size and size > 1):
                want.setdefault((name, s.axis), s.symbol)
    order = {name: k for k, name in enumerate(types)}
    ranked = sorted(want.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    untied = [f"--axis {n}:{a}={sym}" for (n, a), sym in ranked]
    if untied:
        return f"; inputs left static should follow the requested symbols, try also {' '.join(untied)}"
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
            raise RefusedError(f"{e}{_hint(specs, an.ties, model.graph)}") from None


def _ranges(statics: dict[str, int], upper: dict[str, tuple[int, str]], extra: list[tuple[Vals, int, str]],
            symbols: dict[str, Symbol], sums: list[tuple[Poly, int, str]] = (),
            lower: dict[str, tuple[int, str]] | None = None) -> dict[str, SymbolRange]:
    """Each symbol's range from the analysis' bounds (``lower``: least sizes), bounds on one-symbol sizes
    (``extra``) and bounds on linear sizes of several symbols (``sums``: ``past + seq <= rows``, each symbol
    taken with the others at 1; the joint bound itself is checked at run time)."""
    ranges = {s: SymbolRange(s, v) for s, v in statics.items()}
    items = list(upper.items())
    for vals, limit, reason in extra:
        f = factor(vals, symbols)
        if f and len(f[1]) == 1:
            items.append((next(iter(f[1])), (limit // f[0], reason)))
    for poly, limit, reason in sums:
        coeffs = {m[0][0]: c for m, c in poly.terms if m}
        if poly.degree != 1 or any(c <= 0 for c in coeffs.values()):
            continue
        for sym, c in coeffs.items():
            others = poly.value + sum(v for t, v in coeffs.items() if t != sym)
            items.append((sym, ((limit - others) // c, f"{poly} <= {limit}: {reason}")))
            ranges[sym].jointly.append((poly, limit))
    for sym, (top, reason) in items:
        r = ranges[sym]
        if r.max is None or top < r.max:
            r.max, r.reason = top, reason
    for sym, (least, _) in (lower or {}).items():
        ranges[sym].min = max(ranges[sym].min, least)
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
        result.outputs[vo.name] = subgraphs.set_shape(vo, an.infos.get(vo.name), symbols)
    del graph.value_info[:]
