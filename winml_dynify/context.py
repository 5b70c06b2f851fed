"""What the analysis knows and shares with the op handlers and rules: tensor infos, bindings, the
state of one propagation pass (:class:`Ctx`), lazily read constants, and graph helpers.

The lowest layer of the engine: it imports only :mod:`~winml_dynify.dims`, :mod:`~winml_dynify.io` and
the errors; op handlers (:mod:`~winml_dynify.ops`), analysis-time rules and the driver
(:mod:`~winml_dynify.analysis`) build on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx

from . import io
from .dims import Dim, Origin, Poly, Symbol, Vals, const, describe, factor, fit

MAX_VALUE_SIZE = 64  # integer tensors up to this size carry their values through the analysis


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


Evidence = list[dict[str, tuple[int, ...]]]  # per reference export: tensor name -> its shape there


@dataclass
class Analysis:
    """Result of the fixpoint: tensor infos, bindings, conflicts and the rewrite sites."""

    infos: dict[str, TInfo]
    bindings: dict[Origin, Binding]
    conflicts: list[str]
    shape_sites: dict[tuple[str, int], list[Vals]]  # (node, input) -> needed shape-valued entries
    symbols: dict[str, Symbol]
    upper: dict[str, tuple[int, str]] = field(default_factory=dict)  # symbol -> (max, reason)
    lower: dict[str, tuple[int, str]] = field(default_factory=dict)  # symbol -> (min, reason)
    scalar_sites: dict[tuple[str, int], tuple[Vals, str]] = field(default_factory=dict)  # folded mean divisors
    dim_sources: dict[Vals, tuple[str, int]] = field(default_factory=dict)  # see Ctx.dim_sources
    edits: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # see Ctx.edits
    relations: dict[str, Poly] = field(default_factory=dict)  # see Ctx.relations
    ties: list[tuple[str, int, str]] = field(default_factory=list)  # see Ctx.ties


class Ctx:
    """State of one propagation pass."""

    def __init__(self, graph: onnx.GraphProto, symbols: dict[str, Symbol], bindings: dict[Origin, Binding],
                 opset: int, runner: Callable[[Ctx, list[onnx.NodeProto], bool], None]):
        self.graph = graph
        self._runner = runner  # the driver's propagation, for control-flow bodies
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
        self._op_types: dict[str, str] | None = None
        self.memo: dict[bytes, list] = {}  # fallback inference results, shared by the passes of one analysis
        self.fits: dict[Vals, Poly | None] = {}  # fit() of dims seen, shared by the passes under one set of symbols
        self.upper: dict[str, tuple[int, str]] = {}
        self.lower: dict[str, tuple[int, str]] = {}  # symbol -> (its least size, reason)
        # the first tensor (graph order) carrying each dim that is not a product of symbols (conv sizes)
        self.dim_sources: dict[Vals, tuple[str, int]] = {}
        # symbols the graph requires to equal a polynomial of the others (``total == past + seq``)
        self.relations: dict[str, Poly] = {}
        # static input axes the data flow ties to a symbolic dim: (input, axis, that dim's name)
        self.ties: list[tuple[str, int, str]] = []
        self.evidence: Evidence = []  # the reference exports' shapes (:mod:`winml_dynify.evidence`)

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

    def op_type(self, node: str) -> str | None:
        """The op of the node named ``node`` (bodies included)."""
        if self._op_types is None:
            self._op_types = {n.name: n.op_type for n in all_nodes(self.graph)}
        return self._op_types.get(node)

    def seen(self, *names: str) -> list[tuple[tuple[int, ...], ...]]:
        """The shapes of the tensors ``names`` in each reference export that has them all."""
        return [tuple(r[n] for n in names) for r in self.evidence if all(n in r for n in names)]

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
        """Bind ``origin`` to ``vals``; an index reading (``arange``, ...) refines a plain follow of the same
        size (a broadcast zero that a scatter shows to be ``arange(batch)``), never the reverse."""
        old = self.bindings.get(origin) or self.new_bindings.get(origin)
        if old is None or (old.kind == "follow" and kind != "follow" and old.vals == vals):
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

    def lower_bound(self, vals: Vals, least: int, reason: str) -> None:
        """Record that the dim ``vals``, a fixed fraction of one symbol (``h/2`` tokens of a patch embedding),
        must be at least ``least``; a conflict when it is no such fraction. Every size is at least 1."""
        if least <= 1:
            return
        for s in self.symbols.values():
            ratio = Fraction(vals[0], s.static) if s.static else None
            if ratio and all(v == ratio * x for v, x in zip(vals, s.vals, strict=True)):
                low = math.ceil(least / ratio)
                if low > self.lower.get(s.name, (0, ""))[0]:
                    self.lower[s.name] = (low, reason)
                return
        self.conflict(f"{self.name(vals)} must be at least {least} ({reason}), which cannot be expressed as a range")

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

    def trace(self, name: str, ops: tuple[str, ...]) -> str:
        """``name`` followed back through producers of the kinds ``ops`` (their first input): the tensor
        a chain of Cast, Identity, Expand ... starts from."""
        while (p := self.producer.get(name)) is not None and p.op_type in ops:
            name = p.input[0]
        return name

    def run_body(self, nodes: list[onnx.NodeProto]) -> None:
        """Propagate through a control-flow body's nodes (not recorded as run-time dim sources: the outer
        graph cannot read them)."""
        self._runner(self, nodes, False)

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


def const_info(name: str, arr: Lazy, dtype: int, ctx: Ctx) -> TInfo:
    """A constant's info: its axes (bound where a binding says so) and, when small, its values."""
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


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names of ``graph``'s initializers and of its Constant nodes' outputs (top level only)."""
    return {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def pinned_names(graph: onnx.GraphProto) -> set[str]:
    """Names a top-level rewrite must leave produced as they are: the graph outputs, and every name a node
    of a body reads."""
    return {o.name for o in graph.output} | {i for n in graph.node for body in bodies(n) for m in all_nodes(body)
                                             for i in m.input}


def opset_of(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1
