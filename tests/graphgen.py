"""Random static graphs of the ops tracing produces, buildable at ANY (batch, length): the fuzz ground truth.

A program is a list of op names (:data:`OPS`) and a weight seed. :func:`build` turns it into a model whose
input ``x`` is ``[batch, length, H]`` (float) plus ``ids`` ``[batch, length]`` (int64), with every size-
dependent constant baked as a tracer bakes it (Reshape targets, Expand shapes, Slice ends, folded aranges
and fills). Weights depend on the seed only, so the graph built at other sizes is the static export of the
same weights there.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H = 8  # hidden size (even: split into 2 heads)
VOCAB = 11
OPSET = 17


class _Builder:
    def __init__(self, batch: int, length: int, seed: int):
        self.b, self.l = batch, length
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}_{self.n}"

    def const(self, value: np.ndarray, kind: str = "c") -> str:
        name = self.name(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int) -> str:
        """Random weights drawn from the seed only (the same at every size), small nonzero noise."""
        return self.const((self.rng.standard_normal(shape) * 0.3 + 0.05).astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(f"n_{op_type}"), **attrs))
        return outs[0] if n_out == 1 else outs


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def _matmul(g: _Builder, x: str) -> str:
    return g.op("Add", [g.op("MatMul", [x, g.weight(H, H)]), g.weight(H)])


def _gemm(g: _Builder, x: str) -> str:
    flat = g.op("Reshape", [x, g.const(_i64(g.b * g.l, H))])
    y = g.op("Gemm", [flat, g.weight(H, H), g.weight(H)], transB=1)
    return g.op("Reshape", [y, g.const(_i64(g.b, g.l, H))])


def _heads(target_in: str, target_out: str):
    def make(g: _Builder, x: str) -> str:
        split = {"literal": _i64(g.b, g.l, 2, H // 2), "zero": _i64(0, 0, 2, H // 2),
                 "minus1": _i64(g.b, -1, 2, H // 2)}[target_in]
        merge = {"literal": _i64(g.b, g.l, H), "zero": _i64(0, 0, -1), "minus1": _i64(-1, g.l, H)}[target_out]
        y = g.op("Transpose", [g.op("Reshape", [x, g.const(split)])], perm=[0, 2, 1, 3])
        y = g.op("Mul", [y, g.weight(1, 2, 1, H // 2)])
        return g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]), g.const(merge)])
    return make


def _softmax_over_length(g: _Builder, x: str) -> str:
    t = g.op("Transpose", [x], perm=[0, 2, 1])
    return g.op("Transpose", [g.op("Softmax", [t], axis=-1)], perm=[0, 2, 1])


def _attention(g: _Builder, x: str) -> str:
    """Scores [B, L, L] from x x^T, softmax, times x."""
    scores = g.op("MatMul", [x, g.op("Transpose", [x], perm=[0, 2, 1])])
    return g.op("MatMul", [g.op("Softmax", [g.op("Mul", [scores, g.const(np.float32(0.1))])], axis=-1), x])


def _concat_split(g: _Builder, x: str) -> str:
    both = g.op("Concat", [x, g.op("Mul", [x, g.weight(H)])], axis=2)
    a, b = g.op("Split", [both, g.const(_i64(H, H))], n_out=2, axis=2)
    return g.op("Add", [a, b])


def _slice_length(g: _Builder, x: str) -> str:
    """x[:, 0:L] with the end baked as L (then a slice of the hidden axis with literal bounds)."""
    y = g.op("Slice", [x, g.const(_i64(0)), g.const(_i64(g.l)), g.const(_i64(1))])
    half = g.op("Slice", [y, g.const(_i64(0)), g.const(_i64(H // 2)), g.const(_i64(2))])
    return g.op("Concat", [half, half], axis=2)


def _expand(g: _Builder, x: str) -> str:
    return g.op("Add", [x, g.op("Expand", [g.weight(1, 1, H), g.const(_i64(g.b, g.l, H))])])


def _gather_ids(g: _Builder, x: str) -> str:
    return g.op("Add", [x, g.op("Gather", [g.weight(VOCAB, H), "ids"], axis=0)])


def _gather_arange(g: _Builder, x: str) -> str:
    """x gathered along the length by folded arange(L) indices (an identity, baked)."""
    return g.op("Gather", [x, g.const(np.arange(g.l, dtype=np.int64))], axis=1)


def _positions(g: _Builder, x: str) -> str:
    """A position table [32, H] read by folded arange(L) position ids [1, L]."""
    table = g.weight(32, H)
    return g.op("Add", [x, g.op("Gather", [table, g.const(np.arange(g.l, dtype=np.int64)[None])], axis=0)])


def _arange_feature(g: _Builder, x: str) -> str:
    """A folded float arange [1, L, 1] (position index as a feature)."""
    return g.op("Add", [x, g.const(np.arange(g.l, dtype=np.float32).reshape(1, g.l, 1) * 0.01)])


def _fill(g: _Builder, x: str) -> str:
    """A folded ConstantOfShape fill [B, L, 1]."""
    return g.op("Mul", [x, g.const(np.full((g.b, g.l, 1), 0.5, np.float32))])


def _layernorm(g: _Builder, x: str) -> str:
    return g.op("LayerNormalization", [x, g.weight(H), g.weight(H)], axis=-1, epsilon=1e-5)


def _conv_pool(g: _Builder, x: str) -> str:
    t = g.op("Transpose", [x], perm=[0, 2, 1])
    c = g.op("Conv", [t, g.weight(H, H, 3), g.weight(H)], pads=[1, 1], kernel_shape=[3])
    p = g.op("MaxPool", [c], kernel_shape=[3], pads=[1, 1], strides=[1])
    return g.op("Transpose", [p], perm=[0, 2, 1])


def _shape_chain(g: _Builder, x: str) -> str:
    """Reshape to [B, L*H] and back through Shape -> Gather -> Unsqueeze -> Concat (run-time sizes)."""
    shape = g.op("Shape", [x])
    b = g.op("Unsqueeze", [g.op("Gather", [shape, g.const(np.int64(0))], axis=0), g.const(_i64(0))])
    length = g.op("Unsqueeze", [g.op("Gather", [shape, g.const(np.int64(1))], axis=0), g.const(_i64(0))])
    flat = g.op("Reshape", [x, g.op("Concat", [b, g.const(_i64(-1))], axis=0)])
    return g.op("Reshape", [flat, g.op("Concat", [b, length, g.const(_i64(H))], axis=0)])


def _mean_over_length(g: _Builder, x: str) -> str:
    """x minus its mean over the length, the mean taken as a sum divided by a folded L."""
    total = g.op("ReduceSum", [x, g.const(_i64(1))], keepdims=1)
    return g.op("Sub", [x, g.op("Div", [total, g.const(np.float32(g.l))])])


OPS = {
    "matmul": _matmul, "gemm": _gemm, "heads_literal": _heads("literal", "literal"),
    "heads_zero": _heads("zero", "zero"), "heads_minus1": _heads("minus1", "minus1"),
    "softmax_length": _softmax_over_length, "attention": _attention, "concat_split": _concat_split,
    "slice_length": _slice_length, "expand": _expand, "gather_ids": _gather_ids, "gather_arange": _gather_arange,
    "positions": _positions, "arange_feature": _arange_feature, "fill": _fill, "layernorm": _layernorm,
    "conv_pool": _conv_pool, "shape_chain": _shape_chain, "mean_length": _mean_over_length,
}


def build(program: list[str], seed: int, batch: int, length: int) -> onnx.ModelProto:
    """The static model of ``program`` at ``batch`` x ``length`` (weights from ``seed`` only)."""
    g = _Builder(batch, length, seed)
    x = "x"
    for step in program:
        x = OPS[step](g, x)
    g.nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    graph = helper.make_graph(g.nodes, "fuzz",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, length, H]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, length])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, length, H])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def feeds(batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, length, H)).astype(np.float32),
            "ids": rng.integers(0, VOCAB, (batch, length)).astype(np.int64)}
