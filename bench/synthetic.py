"""Generated models for the cost benchmarks: a long chain of transformer-like blocks of any node count."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, HEADS = 16, 4


def chain_model(n_nodes: int, seq: int = 8) -> onnx.ModelProto:
    """A [1, seq, 16] input through blocks of MatMul, Add, Reshape to heads, Transpose, Reshape back, Relu
    (8 nodes each with the two Constant targets, as torch exports them) until ``n_nodes``; every Reshape
    target bakes ``seq``. opset 17, IR 8."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.1, "w")
    bias = numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32) * 0.1, "b")
    heads = numpy_helper.from_array(np.array([1, seq, HEADS, HIDDEN // HEADS], np.int64))
    flat = numpy_helper.from_array(np.array([1, seq, HIDDEN], np.int64))
    nodes, x = [], "x"
    for k in range(max(1, n_nodes // 8)):
        p = f"b{k}_"
        nodes += [
            helper.make_node("Constant", [], [p + "heads"], name=p + "c1", value=heads),
            helper.make_node("Constant", [], [p + "flat"], name=p + "c2", value=flat),
            helper.make_node("MatMul", [x, "w"], [p + "mm"], name=p + "mm"),
            helper.make_node("Add", [p + "mm", "b"], [p + "add"], name=p + "add"),
            helper.make_node("Reshape", [p + "add", p + "heads"], [p + "r1"], name=p + "r1"),
            helper.make_node("Transpose", [p + "r1"], [p + "t"], name=p + "t", perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [p + "t", p + "flat"], [p + "r2"], name=p + "r2"),
            helper.make_node("Relu", [p + "r2"], [p + "y"], name=p + "y"),
        ]
        x = p + "y"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, HIDDEN])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, HIDDEN])],
                              [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
