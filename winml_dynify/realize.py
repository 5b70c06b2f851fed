"""Build run-time values of symbolic dims: one ``Shape`` slice per symbol, shared by every consumer, and
sums and products of them for sizes that are polynomials of the symbols (``past + seq``).

Every node is emitted in the form the model's default-domain opset has (:func:`at_opset`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .dims import Monomial, Poly, Symbol, Vals, describe, fit, is_static
from .errors import RefusedError

# ops whose ``axes`` moved from an attribute to an input at opset 13 (ReduceMean and the others at 18)
_AXES_INPUT_SINCE = {"Unsqueeze": 13, "Squeeze": 13, "ReduceSum": 13}
# comparisons that appeared later than their negation: the negated form is used below that opset
_NEGATED = {"GreaterOrEqual": ("Less", 12), "LessOrEqual": ("Greater", 12)}

# run-time relation checks are named CHECK_PREFIX + "total == past + seq"; their outputs are empty only when the
# relation holds, so no shape of theirs may be stated (an optimiser would drop the check)
CHECK_PREFIX = "dynify/check_"
MAX_BLOCK = 64  # the largest block size a run-time dim is divided by (:meth:`Realizer._derived`)


def at_opset(op: str, inputs: list[str], attrs: dict, opset: int, const) -> list[tuple[str, list[str], dict]]:
    """The node(s) that compute ``op`` at ``opset``, as ``(op, inputs, attributes)`` in order; the last
    one gives the result and each earlier one feeds the next through the placeholder input ``""``.
    ``const`` makes an int64 initializer (for axes that became an input). Raises when the opset has no
    form of the op."""
    if op in _NEGATED and opset < _NEGATED[op][1]:
        return [(_NEGATED[op][0], inputs, attrs), ("Not", [""], {})]
    attrs = dict(attrs)
    since = _AXES_INPUT_SINCE.get(op)
    if since is not None and opset >= since and "axes" in attrs:
        inputs = [*inputs, const(np.array(attrs.pop("axes"), np.int64))]
    elif since is not None and opset < since and len(inputs) > 1:
        raise RefusedError(f"the rewrite needs {op} with run-time axes, which opset {opset} does not have")
    try:
        schema = onnx.defs.get_schema(op, opset)
    except onnx.defs.SchemaError:
        raise RefusedError(f"the rewrite needs {op}, which opset {opset} does not have") from None
    if schema.deprecated:
        raise RefusedError(f"the rewrite needs {op}, which is deprecated at opset {opset}")
    if len(inputs) > schema.max_input:
        raise RefusedError(f"the rewrite needs {op} with {len(inputs)} inputs, which opset {opset} does not have "
                           f"(up to {schema.max_input})")
    return [(op, inputs, attrs)]


class Realizer:
    """Creates the nodes and initializers that compute dims at run time.

    ``sources`` maps each symbol to a graph input and axis that carries it. Results are cached, so a
    dim or shape vector needed by several nodes is computed once. ``relations`` are the symbols the graph
    requires to equal a polynomial of the others, checked at run time by :meth:`guard`. ``taken`` are names
    already used in the graph (a model rewritten before holds ``dynify/...`` names): new names avoid them.
    """

    def __init__(self, symbols: dict[str, Symbol], sources: dict[str, tuple[str, int]],
                 dim_sources: dict[Vals, tuple[str, int]] | None = None, opset: int = 17,
                 relations: dict[str, Poly] | None = None, taken: set[str] | None = None):
        self.symbols = symbols
        self.opset = opset
        self.sources = sources
        self.dim_sources = dim_sources or {}  # tensors carrying dims that are no polynomial of the symbols
        self.relations = relations or {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._cache: dict[object, str] = {}
        self._n = 0
        self.tags: list[onnx.StringStringEntryProto] = []
        self._taken = set(taken or ())
        # the graph position of each tensor's producer, and of the node being rewritten: dims are read only
        # from tensors computed before it (see :meth:`_readable`)
        self.order: dict[str, int] = {}
        self.site: int | None = None

    def _name(self, kind: str) -> str:
        self._n += 1
        while f"dynify/{kind}_{self._n}" in self._taken:
            self._n += 1
        return f"dynify/{kind}_{self._n}"

    def const(self, arr: np.ndarray, kind: str = "const") -> str:
        name = self._name(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        """Emit ``op`` (in its form at the model's opset); returns the name of its output."""
        out = ""
        for k, (kind, ins, kw) in enumerate(at_opset(op, inputs, attrs, self.opset, self.const)):
            prev, out = out, self._name(kind.lower())
            n = helper.make_node(kind, [i or prev for i in ins] if k else ins, [out], name=out, **kw)
            n.metadata_props.extend(self.tags)
            self.nodes.append(n)
        return out

    def labelled(self, op: str, inputs: list[str], label: str) -> str:
        """``op`` (no attributes) in a node whose name and output are ``dynify/<label>``, numbered when
        taken: the name onnxruntime's error shows when the node fails."""
        name = f"dynify/{label}"
        name = name if name not in self._taken else self._name(label)
        self._taken.add(name)
        node = helper.make_node(op, inputs, [name], name=name)
        node.metadata_props.extend(self.tags)
        self.nodes.append(node)
        return name

    def _symbol(self, name: str, scalar: bool = False) -> str:
        """The size of symbol ``name``: a 1-element vector, or a 0-D scalar when ``scalar`` is set.

        Both are ``Gather(Shape(input), axis)`` (a 0-D index gives the scalar): the forms exporters emit,
        which every folder and onnxruntime's symbolic shape inference follow.
        """
        key = ("sym", name, scalar)
        if key not in self._cache:
            inp, axis = self.sources[name]
            if ("shape", inp) not in self._cache:
                self._cache[("shape", inp)] = self.node("Shape", [inp])
            index = np.array(axis, np.int64) if scalar else np.array([axis], np.int64)
            self._cache[key] = self.node("Gather", [self._cache[("shape", inp)], self.const(index)])
        return self._cache[key]

    def guard(self, tensor: str) -> str:
        """``tensor`` unchanged, once every relation holds: an Expand to its own shape plus a zero computed by
        a node named ``dynify/check_total == past + seq``, which fails (a negative size) when it is false."""
        return self.node("Expand", [tensor, self.node("Add", [self.node("Shape", [tensor]), self._checks()])])

    def _checks(self) -> str:
        """A 1-element zero that exists only when every relation holds."""
        key = ("checks",)
        if key not in self._cache:
            zero = None
            for name, expr in self.relations.items():
                diff = self.node("Sub", [self._symbol(name), self._poly(expr)])
                label = f"{CHECK_PREFIX}{name} == {expr}"  # a negative size fails with this node's name
                check = helper.make_node("ConstantOfShape", [self.node("Neg", [self.node("Abs", [diff])])],
                                         [label], name=label, value=numpy_helper.from_array(np.zeros(1, np.int64)))
                check.metadata_props.extend(self.tags)
                self.nodes.append(check)
                # times 0: a zero to the analysis too, which sees the check's size, not its failure
                size = self.node("Mul", [self.node("Shape", [label]), self.const(np.array([0], np.int64))])
                zero = size if zero is None else self.node("Add", [zero, size])
            self._cache[key] = zero
        return self._cache[key]

    def _poly(self, expr: Poly, scalar: bool = False) -> str:
        """``expr`` at run time: a 1-element vector, or a 0-D scalar when ``scalar`` is set."""
        key = ("poly", expr, scalar)
        if key in self._cache:
            return self._cache[key]

        def lit(v: int) -> str:
            return self.const(np.array(v if scalar else [v], np.int64))

        out = None
        for mono, c in expr.terms:
            if mono:
                term = self._monomial(mono, scalar)
                if abs(c) != 1:
                    term = self.node("Mul", [term, lit(abs(c))])
            else:
                term = lit(abs(c))
            if out is None:
                out = term if c > 0 else self.node("Neg", [term])
            else:
                out = self.node("Add" if c > 0 else "Sub", [out, term])
        self._cache[key] = out
        return out

    def _monomial(self, mono: Monomial, scalar: bool = False) -> str:
        key = ("mono", mono, scalar)
        if key not in self._cache:
            parts = [self._symbol(s, scalar) for s, e in mono for _ in range(e)]
            out = parts[0]
            for p in parts[1:]:
                out = self.node("Mul", [out, p])
            self._cache[key] = out
        return self._cache[key]

    def dim(self, vals: Vals) -> str:
        """A 1-element int64 tensor holding the dim ``vals`` at run time: built from the symbols when it is
        a polynomial of them, else read from the tensor that carries it."""
        key = ("dim", vals)
        if key in self._cache:
            return self._cache[key]
        if is_static(vals):
            out = self.const(np.array([vals[0]], np.int64))
        else:
            expr = fit(vals, self.symbols)
            if expr is None and vals in self.dim_sources and self._readable(self.dim_sources[vals][0]):
                tensor, axis = self.dim_sources[vals]
                out = self.node("Gather", [self.node("Shape", [tensor]), self.const(np.array([axis], np.int64))])
            elif expr is None and (built := self._derived(vals)) is not None:
                out = built
            elif expr is None:
                raise RefusedError(f"a size of the rewritten graph ({vals[0]} at export) is no polynomial of "
                                   "the requested symbols and no tensor carries it; it cannot be computed at "
                                   "run time")
            else:
                out = self._poly(expr)
        self._cache[key] = out
        return out

    def _readable(self, tensor: str) -> bool:
        return self.site is None or self.order.get(tensor, -1) < self.site

    def _derived(self, vals: Vals) -> str | None:
        """A dim that is ``carried * poly / k``: a size a tensor carries, times a polynomial of the symbols,
        divided by a block size ``k`` up to :data:`MAX_BLOCK` (``c*h/2`` of a patch unfold, where ``h`` is
        a strided feature map's height). The smallest ``k`` that makes it exact; None when none does."""
        for k in range(1, MAX_BLOCK + 1):
            scaled = tuple(v * k for v in vals)
            if k > 1 and fit(scaled, self.symbols) is not None:
                return self.node("Div", [self.dim(scaled), self.const(np.array([k], np.int64))])
            for carried, (tensor, _) in self.dim_sources.items():
                if not self._readable(tensor) or any(c <= 0 or s % c for s, c in zip(scaled, carried, strict=True)):
                    continue
                rest = tuple(s // c for s, c in zip(scaled, carried, strict=True))
                if fit(rest, self.symbols) is None:
                    continue
                out = self.dim(carried) if is_static(rest) and rest[0] == 1 else \
                    self.node("Mul", [self.dim(carried), self.dim(rest)])
                return out if k == 1 else self.node("Div", [out, self.const(np.array([k], np.int64))])
        return None

    def at_most(self, vals: Vals, limit: int) -> str:
        """The dim ``vals`` at run time, failing in a node named ``dynify/<dim>_must_be_at_most_<limit>``
        when it exceeds ``limit``, rather than in some later broadcast.

        The check is a ``Gather`` of the dim from the sizes ``0..limit``: the same value when in range, and
        onnxruntime's error names the node, the size given and the range (``idx=128 must be within the
        inclusive range [-65,64]``).
        """
        key = ("at_most", vals, limit)
        if key not in self._cache:
            label = describe(vals, self.symbols).replace("*", "_")
            sizes = self.const(np.arange(limit + 1, dtype=np.int64), f"sizes_up_to_{limit}")
            self._cache[key] = self.labelled("Gather", [sizes, self.dim(vals)], f"{label}_must_be_at_most_{limit}")
        return self._cache[key]

    def rows(self, data: str, vals: Vals, limit: int, axis: int, offset: int = 0) -> str:
        """Entries ``offset .. offset + dim`` along ``axis`` of ``data``, where the dim ``vals`` may be at
        most ``limit`` (checked by :meth:`at_most`).

        A ``Gather`` of ``Range(offset, offset + dim)``, which shape inference follows (a Slice ending at
        the checked dim would leave its length unknown), plus the check's zero (``checked - dim``): the
        check stays in the graph, and onnxruntime cannot turn Range + Gather into a Slice, which would
        clamp an out-of-range size instead of failing.
        """
        start = self.const(np.array(offset, np.int64))
        size = self.scalar(vals)
        index = self.node("Range", [start, size if offset == 0 else self.node("Add", [size, start]),
                                    self.const(np.array(1, np.int64))])
        zero = self.node("Sub", [self.at_most(vals, limit), self.dim(vals)])
        return self.node("Gather", [data, self.node("Add", [index, zero])], axis=axis)

    def vector(self, entries: list[int | Vals | str]) -> str:
        """An int64 vector; each entry is a literal int, a dim, or the name of a 1-element tensor."""
        key = ("vec", tuple(entries))
        if key in self._cache:
            return self._cache[key]
        if all(isinstance(e, int) or (isinstance(e, tuple) and is_static(e)) for e in entries):
            out = self.const(np.array([e if isinstance(e, int) else e[0] for e in entries], np.int64))
        else:
            parts = [self.const(np.array([e], np.int64)) if isinstance(e, int) else e if isinstance(e, str)
                     else self.dim(e) for e in entries]
            out = parts[0] if len(parts) == 1 else self.node("Concat", parts, axis=0)
        self._cache[key] = out
        return out

    def item(self, name: str) -> str:
        """Element 0 of the 1-element tensor ``name``, 0-D: ``Gather(name, 0)``, never ``Reshape(name, [])``,
        which onnxruntime's symbolic shape inference cannot follow into ``Range``."""
        return self.node("Gather", [name, self.const(np.array(0, np.int64))])

    def scalar(self, vals: Vals) -> str:
        """A 0-D int64 tensor holding the dim ``vals``: its polynomial over scalar ``Gather(Shape(x), axis)``
        of each symbol, or the :meth:`item` of :meth:`dim`."""
        key = ("scalar", vals)
        if key in self._cache:
            return self._cache[key]
        expr = None if is_static(vals) else fit(vals, self.symbols)
        if is_static(vals):
            out = self.const(np.array(vals[0], np.int64))
        elif expr is None:
            out = self.item(self.dim(vals))
        else:
            out = self._poly(expr, scalar=True)
        self._cache[key] = out
        return out
