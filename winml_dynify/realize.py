"""Build run-time values of symbolic dims: one ``Shape`` slice per symbol, shared by every consumer.

Every node is emitted in the form the model's default-domain opset has (:func:`at_opset`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .dims import Symbol, Vals, describe, factor, is_static
from .errors import RefusedError

# ops whose ``axes`` moved from an attribute to an input at opset 13 (ReduceMean and the others at 18)
_AXES_INPUT_SINCE = {"Unsqueeze": 13, "Squeeze": 13, "ReduceSum": 13}
# comparisons that appeared later than their negation: the negated form is used below that opset
_NEGATED = {"GreaterOrEqual": ("Less", 12), "LessOrEqual": ("Greater", 12)}


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
    dim or shape vector needed by several nodes is computed once. ``taken`` are names already used in the
    graph (a model rewritten before holds ``dynify/...`` names): new names avoid them.
    """

    def __init__(self, symbols: dict[str, Symbol], sources: dict[str, tuple[str, int]],
                 dim_sources: dict[Vals, tuple[str, int]] | None = None, opset: int = 17,
                 taken: set[str] | None = None):
        self.symbols = symbols
        self.opset = opset
        self.sources = sources
        self.dim_sources = dim_sources or {}  # tensors carrying dims that are no product of symbols
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._cache: dict[object, str] = {}
        self._n = 0
        self.tags: list[onnx.StringStringEntryProto] = []
        self._taken = taken or set()

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

    def _symbol(self, name: str) -> str:
        key = ("sym", name)
        if key not in self._cache:  # Shape + Gather rather than Shape(start, end): every folder knows it
            inp, axis = self.sources[name]
            shape = self.node("Shape", [inp])
            self._cache[key] = self.node("Gather", [shape, self.const(np.array([axis], np.int64))])
        return self._cache[key]

    def dim(self, vals: Vals) -> str:
        """A 1-element int64 tensor holding the dim ``vals`` at run time."""
        key = ("dim", vals)
        if key in self._cache:
            return self._cache[key]
        if is_static(vals):
            out = self.const(np.array([vals[0]], np.int64))
        else:
            f = factor(vals, self.symbols)
            if f is None and vals in self.dim_sources:
                tensor, axis = self.dim_sources[vals]
                out = self.node("Gather", [self.node("Shape", [tensor]), self.const(np.array([axis], np.int64))])
                self._cache[key] = out
                return out
            if f is None:
                raise RefusedError(f"a size of the rewritten graph ({vals[0]} at export) is not a product of "
                                   "the requested symbols and cannot be computed at run time")
            c, powers = f
            parts = [self._symbol(s) for s, e in powers.items() for _ in range(e)]
            out = parts[0]
            for p in parts[1:]:
                out = self.node("Mul", [out, p])
            if c != 1:
                out = self.node("Mul", [out, self.const(np.array([c], np.int64))])
        self._cache[key] = out
        return out

    def at_most(self, vals: Vals, limit: int) -> str:
        """The dim ``vals`` at run time, failing in a node named ``dynify/check_<dim>_at_most_<limit>``
        when it exceeds ``limit`` (a negative ConstantOfShape), rather than in some later broadcast."""
        key = ("at_most", vals, limit)
        if key not in self._cache:
            dim = self.dim(vals)
            room = self.node("Sub", [self.const(np.array([limit], np.int64)), dim])
            label = describe(vals, self.symbols).replace("*", "_")
            at_opset("ConstantOfShape", [room], {}, self.opset, self.const)  # refuses below opset 9
            name = f"dynify/check_{label}_at_most_{limit}"
            name = name if name not in self._taken else self._name(name.removeprefix("dynify/"))
            check = helper.make_node("ConstantOfShape", [room], [name], name=name,
                                     value=numpy_helper.from_array(np.zeros(1, np.int64)))
            check.metadata_props.extend(self.tags)
            self.nodes.append(check)
            zero = self.node("ReduceSum", [check.output[0]], keepdims=1)
            self._cache[key] = self.node("Add", [dim, zero])
        return self._cache[key]

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

    def scalar(self, vals: Vals) -> str:
        """A 0-D int64 tensor holding the dim ``vals``."""
        key = ("scalar", vals)
        if key not in self._cache:
            if is_static(vals):
                self._cache[key] = self.const(np.array(vals[0], np.int64))
            else:
                self._cache[key] = self.node("Reshape", [self.dim(vals), self.const(np.array([], np.int64))])
        return self._cache[key]
