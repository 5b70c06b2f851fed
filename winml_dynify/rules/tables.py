"""Position-only computations, tabulated once at a symbol's largest size and read back at run time.

A static export folds what it computes from positions alone: T5's relative-position bias, rotary
cos/sin, causal masks. Made dynamic, each is computed from ``Range(0, seq)`` on every call, a fixed cost
per node that a small model feels. When ``seq`` has a largest size ``M`` (``--max``, or the rows of a
table it indexes) and the computation is *index-local* along every ``seq`` axis (the entry at index
``i`` depends on ``i`` only, never on the length), its value at any ``s <= M`` is the leading ``[:s]``
block of its value at ``M``. The rule proves index-locality op by op (:func:`_kind`), computes the value
at ``M`` once on onnxruntime, stores it, and reads its first ``s`` entries along each ``seq`` axis
(:func:`_read`: a larger ``s`` fails, by name, rather than being clamped). Only tables that save
``MIN_GAIN`` run-time nodes or more are written: a read costs about four.

Classes of the tensors of the top-level graph: *free* (no symbol reaches the content: constants and
what is computed from them alone), *size* (shape arithmetic: computed from shapes only) and *table*
(every symbolic axis is exactly one symbol with a maximum, and the content is index-local). Shape
arithmetic may feed a table op only where a shape is read (a Range's limit, an Expand's shape); as data
it would make entries depend on the length (``s - i``) and stops the table.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..context import TInfo, bodies, constant_names, constants, pinned_names
from ..dims import Poly, Symbol, fit
from ..realize import Realizer

FREE, SIZE, TABLE = "free", "size", "table"
TABLE_BYTES = 16 << 20  # one table at most; all of them at most 4 times that
MIN_GAIN = 8  # run-time nodes the tables must save, after the nodes that read them back
READ_COST = 4  # nodes reading one table back (Slice, Reshape and their two size vectors)
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Min", "Max", "Where", "Equal", "Less", "LessOrEqual",
                "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Not", "Cast", "CastLike", "Abs", "Neg", "Log",
                "Exp", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Tanh", "Sigmoid", "Relu",
                "Sign", "Clip", "Identity", "IsNaN", "IsInf", "Erf", "Softplus", "BitShift"}
_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
Label = int | str  # a static size, or the symbol an axis is


def _labels(info: TInfo | None, symbols: dict[str, Symbol], tops: dict[str, int]) -> list[Label] | None:
    """Per axis its static size or its symbol (one with a maximum); None when some axis is neither."""
    if info is None or info.shape is None:
        return None
    out: list[Label] = []
    for d in info.shape:
        if d.static:
            out.append(d.s0)
            continue
        p = fit(d.vals, symbols)
        s = next(iter(p.symbols)) if p is not None and len(p.symbols) == 1 else None
        if s is None or s not in tops or p != Poly.symbol(s):
            return None
        out.append(s)
    return out


def _attr(n: onnx.NodeProto, name: str, default: int) -> int:
    return next((helper.get_attribute_value(a) for a in n.attribute if a.name == name), default)


def _kind(n: onnx.NodeProto, ins: list[str | None], labels: list[Label] | None,
          in_labels: list[list[Label] | None]) -> str | None:
    """The class of ``n``'s output from its inputs' classes (``ins``, one per input, None for data) and
    the analysed axes of its output and inputs; None for anything that is no function of sizes alone."""
    if n.op_type == "Shape":
        return SIZE if in_labels[0] is None or any(isinstance(x, str) for x in in_labels[0]) else FREE
    if None in ins:
        return None
    if all(c == FREE for c in ins):
        return FREE
    table = labels is not None and any(isinstance(x, str) for x in labels) and _index_local(n, ins, in_labels,
                                                                                              labels)
    if table:
        return TABLE
    return SIZE if TABLE not in ins else None


def _index_local(n: onnx.NodeProto, ins: list[str], in_labels: list[list[Label] | None],
                 labels: list[Label]) -> bool:
    """Whether each entry of ``n``'s output depends on its own indices along the symbolic axes only."""
    op, data = n.op_type, [c in (FREE, TABLE) for c in ins]
    if op in _ELEMENTWISE:
        return all(data)
    if op == "Range":  # start + i * delta: the limit sets the length only
        return ins[0] == FREE and ins[2] == FREE
    if op in ("Unsqueeze", "Squeeze", "Transpose", "Trilu", "Tril", "Triu"):
        return data[0] and all(c == FREE for c in ins[1:])
    if op in ("Expand", "Reshape"):  # broadcasts a value, or moves unit axes only
        if not data[0] or ins[1] not in (FREE, SIZE):
            return False
        if op == "Expand":
            return True
        src = in_labels[0]
        return src is not None and [x for x in src if x != 1] == [x for x in labels if x != 1]
    if op == "ConstantOfShape":
        return ins[0] in (FREE, SIZE)
    if op == "Gather":  # a constant table at indices, or static entries of an index-local tensor
        axis = _attr(n, "axis", 0)
        if ins[0] == FREE and ins[1] == TABLE:
            return True
        src = in_labels[0]
        return ins[0] == TABLE and ins[1] == FREE and src is not None and isinstance(src[axis % len(src)], int)
    if op == "Concat":
        axis = _attr(n, "axis", 0)
        return all(data) and isinstance(labels[axis % len(labels)], int)
    if op == "MatMul":  # the contracted axis is static
        a = in_labels[0]
        return all(data) and a is not None and isinstance(a[-1], int)
    return False


def classify(graph: onnx.GraphProto, infos: dict[str, TInfo], symbols: dict[str, Symbol],
             tops: dict[str, int]) -> dict[str, str]:
    """The class of every top-level tensor computed from sizes and constants alone (see the module)."""
    cls = dict.fromkeys(constant_names(graph), FREE)
    for n in graph.node:
        if n.domain not in ("", "ai.onnx") or bodies(n) or n.op_type in _RANDOM or n.op_type == "Constant" \
                or len(n.output) != 1:
            continue
        ins = [cls.get(i) for i in n.input if i]
        in_labels = [_labels(infos.get(i), symbols, tops) for i in n.input if i]
        kind = _kind(n, ins, _labels(infos.get(n.output[0]), symbols, tops), in_labels)
        if kind is not None:
            cls[n.output[0]] = kind
    return cls


def _frontier(graph: onnx.GraphProto, cls: dict[str, str], producer: dict[str, onnx.NodeProto]) -> list[str]:
    """Table tensors a node outside the tables reads (not only for its shape), except graph outputs and
    names a body reads (they keep their producers)."""
    kept = {o.name for o in graph.output} | pinned_names(graph)
    read = set()
    for n in graph.node:
        if n.op_type != "Shape" and not (len(n.output) == 1 and cls.get(n.output[0]) == TABLE):
            read.update(n.input)
    return [t for t in read if cls.get(t) == TABLE and t in producer and t not in kept]


def _cone(name: str, producer: dict[str, onnx.NodeProto], cls: dict[str, str]) -> list[onnx.NodeProto]:
    """The nodes computing ``name`` from sizes and constants, in graph order of discovery (unordered)."""
    seen, stack, out = set(), [name], []
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or t in seen or cls.get(t) is None:
            continue
        seen.add(t)
        out.append(n)
        stack.extend(i for i in n.input if i)
    return out


def _evaluate(graph: onnx.GraphProto, names: list[str], nodes: list[onnx.NodeProto], infos: dict[str, TInfo],
              env: dict[str, int], symbols: dict[str, Symbol], consts, opsets, ir_version: int
              ) -> list[np.ndarray] | None:
    """``names`` computed by ``nodes`` with every symbol at its size in ``env``: each ``Shape`` becomes a
    constant of its input's shape there, and onnxruntime runs the rest (optimisations off); None when some
    shape there is no polynomial of the symbols, or onnxruntime cannot compute them there."""
    order = {id(n): k for k, n in enumerate(graph.node)}
    made = {o for n in nodes for o in n.output}
    body, needed = [], set()
    for n in sorted(nodes, key=lambda n: order[id(n)]):
        if n.op_type == "Shape":
            info, dims = infos.get(n.input[0]), []
            if info is None or info.shape is None:
                return None
            for d in info.shape:
                p = fit(d.vals, symbols)
                if p is None:
                    return None
                dims.append(p.evaluate(env))
            shape = np.array(dims, np.int64)[_attr(n, "start", 0):_attr(n, "end", len(dims))]
            body.append(helper.make_node("Constant", [], list(n.output), value=numpy_helper.from_array(shape)))
            continue
        body.append(n)
        needed.update(i for i in n.input if i in consts and i not in made)
    inits = [numpy_helper.from_array(consts[name][0].array, name) for name in sorted(needed)]
    outs = [helper.make_tensor_value_info(t, infos[t].dtype, None) for t in names]
    model = helper.make_model(helper.make_graph(body, "tables", [], outs, inits), opset_imports=opsets,
                              ir_version=ir_version)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(names, {})
    except Exception:  # e.g. a position past its table at the maximum: no tables, the rest stands
        return None


def _distinct(nodes: list[onnx.NodeProto], producer: dict[str, onnx.NodeProto], consts) -> int:
    """How many of ``nodes`` remain once equal computations are merged (onnxruntime's common
    subexpression elimination): nodes of one op, attributes and inputs, constants compared by value."""
    memo: dict[str, object] = {}

    def key(t: str) -> object:
        if t not in memo:
            n = producer.get(t)
            if t in consts and consts[t][0].size <= 64:
                memo[t] = ("const", consts[t][0].array.tobytes(), consts[t][0].shape)
            elif n is None or n.op_type == "Constant":
                memo[t] = ("name", t)
            else:
                memo[t] = (n.op_type, n.domain, tuple(a.SerializeToString() for a in n.attribute),
                           tuple(key(i) for i in n.input))
        return memo[t]

    return len({key(n.output[0]) for n in nodes})


def _read(table: np.ndarray, labels: list[Label], symbols: dict[str, Symbol], tops: dict[str, int],
          rz: Realizer) -> str:
    """The leading block of ``table`` at the run-time sizes: a Slice to them, then a Reshape to them,
    named ``dynify/<symbol>_must_be_at_most_<M>``. Past ``M`` the Slice stops at ``M`` and the Reshape
    fails there, by that name, instead of passing on a clamped table; and shape inference (onnx's, and
    onnxruntime's symbolic one, which reads the Slice as ``Min(M, s)``) takes the Reshape's sizes."""
    axes = [k for k, x in enumerate(labels) if isinstance(x, str)]
    dims = [x if isinstance(x, int) else symbols[x].vals for x in labels]
    cut = rz.node("Slice", [rz.const(table, "table"), rz.const(np.zeros(len(axes), np.int64)),
                            rz.vector([dims[k] for k in axes]), rz.const(np.array(axes, np.int64))])
    named = sorted({(labels[k], tops[labels[k]]) for k in axes})
    label = "_and_".join(f"{s}_must_be_at_most_{top}" for s, top in named)
    return rz.labelled("Reshape", [cut, rz.vector(dims)], label)


def _env(symbols: dict[str, Symbol], tops: dict[str, int]) -> dict[str, int]:
    """Each symbol at its maximum where it has one, else at its exported size."""
    return {s: symbols[s].static for s in symbols} | tops


def _plan(graph: onnx.GraphProto, infos: dict[str, TInfo], symbols: dict[str, Symbol], tops: dict[str, int],
          consts) -> tuple[dict[str, str], list[str], list[onnx.NodeProto], int]:
    """The tensor classes, the table tensors that fit ``TABLE_BYTES`` at the maxima ``tops``, the nodes of
    their cones, and the run-time nodes they save once read back (0 when none is picked)."""
    cls = classify(graph, infos, symbols, tops)
    producer = {n.output[0]: n for n in graph.node if len(n.output) == 1}
    env = _env(symbols, tops)
    picked, cones, budget = [], [], 4 * TABLE_BYTES
    for t in sorted(_frontier(graph, cls, producer)):
        labels = _labels(infos[t], symbols, tops)
        size = math.prod(env[x] if isinstance(x, str) else x for x in labels)
        nbytes = size * np.dtype(helper.tensor_dtype_to_np_dtype(infos[t].dtype)).itemsize
        if nbytes <= min(TABLE_BYTES, budget):
            picked.append(t)
            cones.extend(_cone(t, producer, cls))
            budget -= nbytes
    unique = list({id(n): n for n in cones}.values())
    saved = _distinct([n for n in unique if cls[n.output[0]] == TABLE], producer, consts)
    return cls, picked, unique, saved - READ_COST * len(picked) if picked else 0


def gain(graph: onnx.GraphProto, infos: dict[str, TInfo], symbols: dict[str, Symbol], tops: dict[str, int]) -> int:
    """The run-time nodes tables at the maxima ``tops`` would save, net of their reads: what a ``--max``
    not given would buy (counted at the exported sizes, so no table is too large to count)."""
    return _plan(graph, infos, symbols, tops, constants(graph))[3]


def tabulate(model: onnx.ModelProto, infos: dict[str, TInfo], symbols: dict[str, Symbol], tops: dict[str, int],
             rz: Realizer) -> int:
    """Replace the table tensors whose value at the maxima ``tops`` fits ``TABLE_BYTES`` by a read of that
    value (:func:`_read`), when together they save ``MIN_GAIN`` run-time nodes or more; the nodes and
    initializers are added to ``rz``, the readers rewired in ``model``. Returns how many."""
    graph = model.graph
    consts = constants(graph)
    cls, picked, unique, net = _plan(graph, infos, symbols, tops, consts)
    if net < MIN_GAIN:
        return 0
    env = _env(symbols, tops)
    values = _evaluate(graph, picked, unique, infos, env, symbols, consts, list(model.opset_import),
                       model.ir_version)
    if values is None:
        return 0
    renamed = {t: _read(value, _labels(infos[t], symbols, tops), symbols, tops, rz)
               for t, value in zip(picked, values, strict=True)}
    for n in graph.node:
        if not (len(n.output) == 1 and cls.get(n.output[0]) == TABLE):
            n.input[:] = [renamed.get(i, i) for i in n.input]
    return len(picked)
