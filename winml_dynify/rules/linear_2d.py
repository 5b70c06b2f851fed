"""Linear layers on symbolic leading axes, written as the rank-2 Gemm onnxruntime makes of static ones.

``MatMul(x, W) + b`` with ``x`` of rank 3 or more: at static shapes onnxruntime's MatMulAddFusion turns it
into ``Reshape(x, [-1, K]) -> Gemm(W, b) -> Reshape`` (one kernel with the bias, no separate Add); once a
leading axis of ``x`` is symbolic it leaves MatMul and Add. :func:`to_gemm` writes that form itself:
``Reshape(x, [-1, K])`` (a constant target), ``Gemm``, and a Reshape back to ``x``'s leading dims and ``N``
(the first symbolic one ``-1``, the others from the shared size sources: one target per distinct shape).
The two are equal by definition of MatMul; the parity checks compare them like every rewrite. (Swin tiny:
0.276 -> 0.264 ms at batch 1, 0.654 -> 0.600 ms at batch 3; see docs/BENCHMARKS.md.)

The Gemm carries what it replaced under :data:`MARK`, and :func:`from_gemm` writes the MatMul and Add
back: ``fix`` does so before folding (the static model keeps the exporter's ops), and a rewrite does so
first (a dynified model made dynamic along more axes is analysed in its exported form).
"""

from __future__ import annotations

import json

import onnx

from ..context import TInfo
from ..dims import is_static
from ..realize import Realizer

MARK = "winml.dynify.linear"  # on the Gemm: {"matmul": name, "product": its output, "side": the Add's input}
_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}  # onnxruntime's CPU Gemm kernels


def _readers(nodes: list[onnx.NodeProto]) -> dict[str, int]:
    readers: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    return readers


def to_gemm(graph: onnx.GraphProto, infos: dict[str, TInfo], rz: Realizer) -> int:
    """Rewrite each top-level ``Add(MatMul(x, W), b)`` with constant ``W`` [K, N] and ``b`` [N], ``x`` of
    rank >= 3 with a symbolic leading dim, and the MatMul read by that Add alone. An Add whose sum feeds
    another Add (a residual) is left: onnxruntime fuses its bias into SkipLayerNormalization, and the Gemm
    form measured slower there (BERT tiny). Returns how many."""
    weights = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)
    readers = _readers(nodes)
    outputs = {o.name for o in graph.output}
    summed = {i for n in nodes if n.op_type == "Add" for i in n.input}
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    done: dict[int, onnx.NodeProto] = {}  # Add's index -> the Reshape back that replaces it
    drop: set[int] = set()  # the MatMuls it takes in
    for a, add in enumerate(nodes):
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            continue
        if add.output[0] in summed:  # a residual sum: onnxruntime fuses this bias into SkipLayerNormalization
            continue
        for k in (0, 1):
            m, b = producer.get(add.input[k]), add.input[1 - k]
            mm = nodes[m] if m is not None else None
            if (mm is None or mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx") or m in drop
                    or readers.get(mm.output[0]) != 1 or mm.output[0] in outputs):
                continue
            w, x, bias = weights.get(mm.input[1]), infos.get(mm.input[0]), weights.get(b)
            if (w is None or bias is None or len(w.dims) != 2 or list(bias.dims) != [w.dims[1]]
                    or w.data_type not in _TYPES or bias.data_type != w.data_type):
                continue
            if x is None or x.shape is None or len(x.shape) < 3 or not x.shape[-1].static \
                    or x.shape[-1].s0 != w.dims[0] or all(is_static(d.vals) for d in x.shape[:-1]):
                continue
            rz.tags = list(mm.metadata_props)
            flat = rz.node("Reshape", [mm.input[0], rz.vector([-1, int(w.dims[0])])])
            y = rz.node("Gemm", [flat, mm.input[1], b])
            gemm = rz.nodes[-1]
            gemm.metadata_props.add(key=MARK, value=json.dumps({"matmul": mm.name, "product": mm.output[0],
                                                                 "side": k}))
            lead: list[int | tuple] = [d.vals for d in x.shape[:-1]]
            first = next(j for j, v in enumerate(lead) if not is_static(v))
            lead[first] = -1  # inferred: the target needs no read of that size (a constant with one symbol)
            back = rz.vector([*lead, int(w.dims[1])])
            done[a] = onnx.helper.make_node("Reshape", [y, back], list(add.output), name=add.name)
            done[a].metadata_props.extend(add.metadata_props)
            drop.add(m)
            break
    if done:
        del graph.node[:]
        graph.node.extend(done.get(k, n) for k, n in enumerate(nodes) if k not in drop)
    return len(done)


def from_gemm(graph: onnx.GraphProto) -> int:
    """Write each Gemm :func:`to_gemm` made back as its MatMul and Add, in place (the Add named as the
    Reshape back was, with its tags). The Reshape that flattened ``x`` goes when nothing else reads it;
    the target vectors are left to pruning. Returns how many."""
    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers = _readers(nodes)
    reader_of = {i: n for n in nodes for i in n.input}
    swap: dict[int, list[onnx.NodeProto]] = {}  # id of the Reshape back -> MatMul, Add
    gone: set[int] = set()
    for g in nodes:
        mark = next((p.value for p in g.metadata_props if p.key == MARK), None)
        if g.op_type != "Gemm" or mark is None:
            continue
        flat, back = producer.get(g.input[0]), reader_of.get(g.output[0])
        if flat is None or flat.op_type != "Reshape" or back is None or back.op_type != "Reshape" \
                or readers.get(g.output[0]) != 1:
            continue
        info = json.loads(mark)
        mm = onnx.helper.make_node("MatMul", [flat.input[0], g.input[1]], [info["product"]], name=info["matmul"])
        mm.metadata_props.extend(p for p in g.metadata_props if p.key != MARK)
        pair = [info["product"], g.input[2]][:: 1 if info["side"] == 0 else -1]
        add = onnx.helper.make_node("Add", pair, list(back.output), name=back.name)
        add.metadata_props.extend(back.metadata_props)
        swap[id(back)] = [mm, add]
        gone.add(id(g))
        if readers.get(flat.output[0]) == 1:
            gone.add(id(flat))
    if swap:
        del graph.node[:]
        for n in nodes:
            if id(n) not in gone:
                graph.node.extend(swap.get(id(n), [n]))
    return len(swap)
