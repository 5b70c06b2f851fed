"""Data-flow analysis: which baked constants depend on the symbols, and what they must become.

Every tensor gets a shape of :class:`~winml_dynify.dims.Dim` (values at the sample points) and, for
small integer tensors, its value at every point. Propagation runs in topological order through the
op handlers of :mod:`winml_dynify.ops`. Where an op forces a static dim that came from a constant
(an axis of a folded tensor, or an entry of a shape-valued input) to equal a symbolic dim, a *binding*
is recorded; the pass is re-run with the bindings in effect until nothing new is bound. What is left
is the plan: the bindings (what each constant must become) and the conflicts (why it cannot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from . import io
from .dims import Dim, Origin, Poly, Symbol, Vals, const, describe, evaluate, factor, fit
from .errors import RefusedError

MAX_VALUE_SIZE = 64  # integer tensors up to this size carry their values through the analysis
MAX_PASSES = 40


@dataclass
class TInfo:
    """What the analysis knows about one tensor."""

    shape: list[Dim] | None
    # flat entries, per point; only for small integer tensors and small float ones (shape arithmetic
    # such as ``ceil(h / 2)`` runs in float), whose entries are Python floats
    value: list[Vals] | None = None
    const: np.ndarray | None = None  # static content of a constant tensor
    dtype: int = onnx.TensorProto.FLOAT
    origins: list[Origin | None] | None = None  # per value entry: the dim it was read from (Shape)

    def value_at(self, p: int) -> np.ndarray:
        assert self.value is not None and self.shape is not None
        shp = [d.vals[p] for d in self.shape]
        return np.array([v[p] for v in self.value], dtype=value_dtype(self.dtype)).reshape(shp)


def value_dtype(dtype: int) -> type:
    """The numpy type values of an ONNX element type are tracked in: float64 for floats, else int64."""
    return np.float64 if np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)).kind == "f" else np.int64


@dataclass
class Binding:
    vals: Vals
    node: str  # the node that forced it
    # "follow"; "arange" (a size-1 axis that is really an index); "arange-component" (the same, for the
    # first component of GatherND index pairs); "row-offset"
    kind: str = "follow"
    row: Vals | None = None  # row-offset: the length of one row of the flattened axis


@dataclass
class Analysis:
    """Result of the fixpoint: tensor infos, bindings, conflicts and the rewrite sites."""

    infos: dict[str, TInfo]
    bindings: dict[Origin, Binding]
    conflicts: list[str]
    shape_sites: dict[tuple[str, int], list[Vals]]  # (node, input) -> needed shape-valued entries
    symbols: dict[str, Symbol]
    upper: dict[str, tuple[int, str]] = field(default_factory=dict)  # symbol -> (max, reason)
    scalar_sites: dict[tuple[str, int], tuple[Vals, str]] = field(default_factory=dict)  # folded mean divisors
    dim_sources: dict[Vals, tuple[str, int]] = field(default_factory=dict)  # see Ctx.dim_sources
    edits: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # see Ctx.edits
    relations: dict[str, Poly] = field(default_factory=dict)  # see Ctx.relations
    ties: list[tuple[str, int, str]] = field(default_factory=list)  # see Ctx.ties


class Ctx:
    """State of one propagation pass."""

    def __init__(self, graph: onnx.GraphProto, symbols: dict[str, Symbol], bindings: dict[Origin, Binding],
                 opset: int):
        self.graph = graph
        self.symbols = symbols
        self.bindings = bindings
        self.new_bindings: dict[Origin, Binding] = {}
        self.conflicts: list[str] = []
        self.shape_sites: dict[tuple[str, int], list[Vals]] = {}
        self.scalar_sites: dict[tuple[str, int], tuple[Vals, str]] = {}
        # node -> (kind, detail): a node the rewrite replaces (a Reshape that is a transpose at export)
        self.edits: dict[str, tuple[str, list[int]]] = {}
        self.merged: dict[Vals, str] = {}  # a dim a Reshape merged a symbolic unit axis behind -> that Reshape
        self.infos: dict[str, TInfo] = {}
        self.opset = opset
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in all_nodes(graph) for o in n.output}
        self.node: onnx.NodeProto | None = None
        self._consumers: dict[str, list[tuple[onnx.NodeProto, int]]] | None = None
        self.memo: dict[bytes, list] = {}  # fallback inference results, shared by the passes of one analysis
        self.fits: dict[Vals, Poly | None] = {}  # fit() of dims seen, shared by the passes under one set of symbols
        self.upper: dict[str, tuple[int, str]] = {}
        # the first tensor (graph order) carrying each dim that is not a product of symbols (conv sizes)
        self.dim_sources: dict[Vals, tuple[str, int]] = {}
        # symbols the graph requires to equal a polynomial of the others (``total == past + seq``)
        self.relations: dict[str, Poly] = {}
        # static input axes the data flow ties to a symbolic dim: (input, axis, that dim's name)
        self.ties: list[tuple[str, int, str]] = []

    @property
    def consumers(self) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
        """Tensor name -> (node, input index) of every node reading it, bodies included."""
        if self._consumers is None:
            self._consumers = {}
            for n in all_nodes(self.graph):
                for k, i in enumerate(n.input):
                    self._consumers.setdefault(i, []).append((n, k))
        return self._consumers

    def bindings_of(self, node: str) -> set[int]:
        """Positions of the Reshape choices bound for ``node`` (seeded or found)."""
        return {o.pos for o in (*self.bindings, *self.new_bindings) if o.kind == "choice" and o.name == node}

    # -- dims --------------------------------------------------------------------------------
    def bound(self, origin: Origin, vals: Vals) -> Dim:
        """A static dim from a constant: its bound value if a binding exists."""
        b = self.bindings.get(origin) or self.new_bindings.get(origin)
        return Dim(b.vals if b else vals, origin)

    def name(self, vals: Vals) -> str:
        return describe(vals, self.symbols)

    def fit(self, vals: Vals) -> Poly | None:
        """The polynomial of the symbols ``vals`` is (:func:`~winml_dynify.dims.fit`), cached."""
        if vals not in self.fits:
            self.fits[vals] = fit(vals, self.symbols)
        return self.fits[vals]

    def bind(self, origin: Origin, vals: Vals, kind: str = "follow") -> None:
        old = self.bindings.get(origin) or self.new_bindings.get(origin)
        if old is None:
            self.new_bindings[origin] = Binding(vals, self.node.name if self.node else "", kind)
        elif old.vals != vals:
            self.conflict(f"{origin.describe()} must be both {self.name(old.vals)} and {self.name(vals)}")

    def record_dims(self, name: str, info: TInfo) -> None:
        for k, d in enumerate(info.shape or []):
            if not d.static and d.vals not in self.dim_sources and self.fit(d.vals) is None:
                self.dim_sources[d.vals] = (name, k)

    def upper_bound(self, vals: Vals, limit: int, reason: str) -> None:
        """Record that the dim ``vals`` (``c * symbol``) can be at most ``limit``."""
        f = factor(vals, self.symbols)
        if f is None or len(f[1]) != 1 or next(iter(f[1].values())) != 1:
            self.conflict(f"{self.name(vals)} is bounded by {reason}, which cannot be expressed as a range")
            return
        sym = next(iter(f[1]))
        top = limit // f[0]
        if sym not in self.upper or self.upper[sym][0] > top:
            self.upper[sym] = (top, reason)

    def conflict(self, msg: str) -> None:
        where = f"node '{self.node.name}' ({self.node.op_type})" if self.node is not None else "graph"
        self.conflicts.append(f"{where}: {msg}")

    def equate(self, a: Dim, b: Dim, contraction: bool = False) -> Dim:
        """Two dims that must be equal: a static one from a constant is bound to the other. In a
        contraction against a weight, a Reshape's choice of where a symbol goes yields instead (in-features
        are never a symbol)."""
        if a.vals == b.vals:
            return a if not a.static or b.static else b
        if a.s0 == b.s0:
            matched = self._equate_pieces(a, b)
            if matched is not None:
                return matched
            for x, y in ((a, b), (b, a)):
                if (contraction and x.static and x.origin is not None and x.origin.kind == "axis"
                        and y.origin is not None and y.origin.kind == "choice"):
                    self.bind(y.origin, x.vals)
                    return x
            for x, y in ((a, b), (b, a)):
                if x.static and x.origin is not None and not y.static:
                    self.bind(x.origin, y.vals)
                    return y
        for x, y in ((a, b), (b, a)):  # a Reshape's guess put a symbol where a static dim belongs: undo it
            if (y.static and not x.static and x.origin is not None and x.origin.kind == "choice"
                    and x.origin not in self.bindings and x.origin not in self.new_bindings):
                self.bind(x.origin, const(x.s0))
                return y
        if a.s0 == b.s0 and not a.static and not b.static and self._relate(a, b):
            return a
        for x, y in ((a, b), (b, a)):
            if x.static and x.carrier is not None and not y.static:
                self.ties.append((*x.carrier, self.name(y.vals)))
        self.conflict(f"dim {self.describe_dim(a)} must equal {self.describe_dim(b)}")
        return b if a.static else a

    def _relate(self, a: Dim, b: Dim) -> bool:
        """Two symbolic dims the graph requires equal, where one is a free symbol the other's polynomial does
        not involve (an attention mask's ``total`` meeting scores of ``past + seq``): record the relation
        (the next pass gives the symbol the polynomial's values) rather than a conflict."""
        pa, pb = self.fit(a.vals), self.fit(b.vals)
        if pa is None or pb is None:
            return False
        order = list(self.symbols)
        cands = []
        for x, y in ((pa, pb), (pb, pa)):
            m = x.monomial()
            if m is not None and m[0] == 1 and len(m[1]) == 1 and next(iter(m[1].values())) == 1:
                sym = next(iter(m[1]))
                if sym not in y.symbols and sym not in self.relations:
                    cands.append((order.index(sym), sym, y))
        if not cands:
            return False
        _, sym, expr = max(cands, key=lambda c: c[0])  # of two symbols, the later one is derived
        self.relations[sym] = expr
        return True

    def _equate_pieces(self, a: Dim, b: Dim) -> Dim | None:
        """A baked dim built like a symbolic one (the same number of merged or concatenated pieces, equal at
        export), whose differing pieces are all bindable: bind piece by piece. A resized position grid
        ``[4, 4]`` flattened and added to the flattened patch grid ``[h/8, w/8]`` takes ``h/8`` and ``w/8``."""
        for x, y in ((a, b), (b, a)):
            if not x.static or y.static:
                continue
            for kind in ("parts", "terms"):
                px, py = getattr(x, kind), getattr(y, kind)
                if not px or not py or len(px) != len(py):
                    continue
                if all(u.vals == v.vals or (u.s0 == v.s0 and (u.origin is not None or u.parts or u.terms))
                       for u, v in zip(px, py, strict=True)):
                    for u, v in zip(px, py, strict=True):
                        self.equate(u, v)
                    return y
        return None

    def broadcast(self, a: Dim, b: Dim) -> Dim:
        """Numpy broadcasting of two dims; a dim that is 1 everywhere stays a broadcast."""
        if a.vals == b.vals:
            return a if not a.static or b.static else b
        if all(v == 1 for v in a.vals):
            return b
        if all(v == 1 for v in b.vals):
            return a
        return self.equate(a, b)

    def describe_dim(self, d: Dim) -> str:
        src = f" from {d.origin.describe()}" if d.origin else ""
        return f"{self.name(d.vals)}{src}"

    # -- tensors -----------------------------------------------------------------------------
    def info(self, name: str) -> TInfo | None:
        return self.infos.get(name) if name else None

    def attr(self, name: str, default=None):
        assert self.node is not None
        for a in self.node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default


SMALL_CONST = 4096  # constants up to this many elements are read into numpy for the analysis


class Lazy:
    """A constant's shape and type at once, its content only when a rule asks (weights stay as bytes)."""

    def __init__(self, proto: onnx.TensorProto | None = None, array: np.ndarray | None = None):
        self._proto, self._array = proto, array
        self.shape = tuple(proto.dims) if proto is not None else array.shape  # type: ignore[union-attr]
        self.dtype = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)) if proto is not None
                      else array.dtype)  # type: ignore[union-attr]
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = io.tensor_array(self._proto)  # from its external file if it has one
        return self._array


def _const_info(name: str, arr: Lazy, dtype: int, ctx: Ctx) -> TInfo:
    shape = [ctx.bound(Origin("axis", name, k, 0), const(s)) for k, s in enumerate(arr.shape)]
    value = None
    if arr.dtype.kind in "iubf" and arr.size <= MAX_VALUE_SIZE and all(d.static for d in shape):
        flat = arr.array.reshape(-1)
        if arr.dtype.kind != "f":
            value = [const(int(v)) for v in flat]
        elif np.isfinite(flat).all():
            value = [(float(v),) * len(const(0)) for v in flat]
    return TInfo(shape, value, arr.array if arr.size <= SMALL_CONST else None, dtype)


def constants(graph: onnx.GraphProto) -> dict[str, tuple[Lazy, int]]:
    """Initializers and Constant-node outputs with their (lazily read) content and element type."""
    out: dict[str, tuple[Lazy, int]] = {}
    for t in graph.initializer:
        out[t.name] = (Lazy(t), t.data_type)
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            a = n.attribute[0]
            if a.name == "value":
                out[n.output[0]] = (Lazy(a.t), a.t.data_type)
            elif a.name in ("value_int", "value_ints"):
                out[n.output[0]] = (Lazy(array=np.array(onnx.helper.get_attribute_value(a), np.int64)),
                                    onnx.TensorProto.INT64)
            elif a.name in ("value_float", "value_floats"):
                out[n.output[0]] = (Lazy(array=np.array(onnx.helper.get_attribute_value(a), np.float32)),
                                    onnx.TensorProto.FLOAT)
        for body in bodies(n):  # a body's constants are names of the same scope chain
            out.update(constants(body))
    return out


def bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of a control-flow node (Loop, Scan, If branches), in attribute order."""
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of the bodies nested in it, outer nodes before their bodies'."""
    for n in graph.node:
        yield n
        for body in bodies(n):
            yield from all_nodes(body)


def opset_of(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


def _one_pass(model: onnx.ModelProto, input_dims: dict[str, list[Vals]], symbols: dict[str, Symbol],
              bindings: dict[Origin, Binding], consts: dict[str, tuple[np.ndarray, int]], memo: dict,
              fits: dict) -> Ctx:
    graph = model.graph
    ctx = Ctx(graph, symbols, bindings, opset_of(model))
    ctx.memo, ctx.fits = memo, fits
    for name, (arr, dt) in consts.items():
        ctx.infos[name] = _const_info(name, arr, dt, ctx)
    for vi in graph.input:
        if vi.name in ctx.infos:
            continue
        tt = vi.type.tensor_type
        ctx.infos[vi.name] = TInfo([Dim(v, carrier=(vi.name, k)) for k, v in enumerate(input_dims[vi.name])],
                                   None, None, tt.elem_type)
    run_nodes(ctx, graph.node)
    return ctx


def run_nodes(ctx: Ctx, nodes, record: bool = True) -> None:
    """Propagate through ``nodes`` in order; subgraph handlers call this on their bodies (whose tensors
    are not ``record``-ed as run-time dim sources: the outer graph cannot read them)."""
    from . import ops_onnx  # noqa: F401  (registers its handlers in the same table)
    from .ops import HANDLERS, fallback  # the op table lives beside the analysis
    from .ops_ort import ort_fallback  # registers onnxruntime's contrib ops in the same table

    outer = ctx.node
    for node in nodes:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        ctx.node = node
        ins = [ctx.info(i) for i in node.input]
        if any(i is None for i, name in zip(ins, node.input, strict=True) if name):
            continue  # an unknown input leaves the outputs unknown
        domain = "" if node.domain == "ai.onnx" else node.domain
        handler = HANDLERS.get((domain, node.op_type)) or (
            ort_fallback if domain.startswith("com.microsoft") else fallback)
        outs = handler(ctx, node, ins)
        ctx.node = node
        for name, info in zip(node.output, outs, strict=False):
            if name and info is not None:
                ctx.infos[name] = info
                if record:
                    ctx.record_dims(name, info)
    ctx.node = outer


def analyse(model: onnx.ModelProto, input_dims: dict[str, list[Vals]], symbols: dict[str, Symbol],
            seed_bindings: dict[Origin, Binding] | None = None) -> Analysis:
    """Run propagation passes until no new binding appears; return the final plan."""
    from .rules.offsets import offset_bindings  # the rule module imports this one

    consts = constants(model.graph)
    bindings: dict[Origin, Binding] = dict(seed_bindings or {})
    memo: dict = {}
    relations: dict[str, Poly] = {}
    fits: dict = {}
    for _ in range(MAX_PASSES):
        ctx = _one_pass(model, input_dims, symbols, bindings, consts, memo, fits)
        if ctx.relations:  # start again with the derived symbols' values
            relations.update(ctx.relations)
            symbols, input_dims = _derive(symbols, input_dims, relations)
            fits = {}
            bindings = dict(seed_bindings or {})
            continue
        extra = offset_bindings(ctx, consts)
        extra = {k: v for k, v in extra.items() if k not in bindings}
        if not ctx.new_bindings and not extra:
            return Analysis(ctx.infos, bindings, ctx.conflicts, ctx.shape_sites, symbols, ctx.upper,
                            ctx.scalar_sites, ctx.dim_sources, ctx.edits, relations, ctx.ties)
        bindings.update(ctx.new_bindings)
        bindings.update(extra)
    raise RefusedError("the shape analysis did not settle; the graph is too irregular to rewrite soundly")


def _derive(symbols: dict[str, Symbol], input_dims: dict[str, list[Vals]],
            relations: dict[str, Poly]) -> tuple[dict[str, Symbol], dict[str, list[Vals]]]:
    """Give each related symbol the sample values of its polynomial, in the symbols and the input dims."""
    out = dict(symbols)
    for name, expr in relations.items():
        out[name] = Symbol(name, symbols[name].static, evaluate(expr, symbols), expr)
    swap = {symbols[n].vals: out[n].vals for n in relations}
    return out, {k: [swap.get(v, v) for v in dims] for k, dims in input_dims.items()}
