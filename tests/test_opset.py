"""Every node the rewrite adds exists, in the form used, at the model's default-domain opset."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run, tensor
from onnx import TensorProto, helper, numpy_helper

from winml_dynify import RefusedError, dynify
from winml_dynify.realize import at_opset


def _model(nodes, inputs, outputs, inits, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def _decoder_block(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    """Token embedding + folded position ids into a 40-row table + a folded (1, 16, 16) causal mask."""
    mask = np.triu(np.full((16, 16), -1e9, np.float32), 1)[None]
    return _model(
        [helper.make_node("Gather", ["emb", "ids"], ["e"]),
         helper.make_node("Gather", ["table", "pos"], ["p"]),
         helper.make_node("Add", ["e", "p"], ["x"]),
         helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["x", "xt"], ["s"]),
         helper.make_node("Add", ["s", "mask"], ["sm"]),
         helper.make_node("Softmax", ["sm"], ["y"], axis=-1)],
        [tensor("ids", [1, 16], TensorProto.INT64)], [tensor("y", [1, 16, 16])],
        {"emb": rng.standard_normal((50, 4)).astype(np.float32),
         "table": rng.standard_normal((40, 4)).astype(np.float32),
         "pos": np.arange(16, dtype=np.int64)[None], "mask": mask}, opset)


def _expected(m: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    n = ids.shape[1]
    x = inits["emb"][ids] + inits["table"][:n][None]
    s = x @ x.transpose(0, 2, 1) + np.triu(np.full((n, n), -1e9, np.float32), 1)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_new_nodes_exist_at_the_model_opset(opset, rng):
    m = _decoder_block(opset, rng)
    res = dynify(m, ["ids:0=batch", "ids:1=seq"])
    assert {r["rule"] for r in res.rewrites} >= {"causal-mask", "affine"}
    new = [n for n in res.model.graph.node if n.name.startswith("dynify/")]
    assert new
    for n in new:
        schema = onnx.defs.get_schema(n.op_type, opset)  # raises when the op is newer than the opset
        assert not schema.deprecated, n.op_type
        assert len(n.input) <= schema.max_input, (n.op_type, list(n.input))
    if opset < 12:
        assert "GreaterOrEqual" not in {n.op_type for n in new}
    onnx.checker.check_model(res.model, full_check=True)
    ids = rng.integers(0, 50, (3, 9)).astype(np.int64)
    np.testing.assert_allclose(run(res.model, {"ids": ids})[0], _expected(m, ids), rtol=1e-4, atol=1e-6)


def test_axes_move_between_attribute_and_input():
    consts = []

    def const(a):
        consts.append(a)
        return f"c{len(consts)}"

    assert at_opset("Unsqueeze", ["x"], {"axes": [0]}, 11, const) == [("Unsqueeze", ["x"], {"axes": [0]})]
    assert at_opset("Unsqueeze", ["x"], {"axes": [0]}, 13, const) == [("Unsqueeze", ["x", "c1"], {})]
    np.testing.assert_array_equal(consts[0], [0])
    assert at_opset("GreaterOrEqual", ["a", "b"], {}, 11, const) == [("Less", ["a", "b"], {}), ("Not", [""], {})]
    assert at_opset("GreaterOrEqual", ["a", "b"], {}, 12, const) == [("GreaterOrEqual", ["a", "b"], {})]


def test_an_op_missing_from_the_opset_is_a_refusal():
    with pytest.raises(RefusedError, match="Range, which opset 10"):
        at_opset("Range", ["a", "b", "c"], {}, 10, lambda a: "c")
    with pytest.raises(RefusedError, match="run-time axes"):
        at_opset("Unsqueeze", ["x", "axes"], {}, 11, lambda a: "c")
