"""rules/identities: And(True, m) and Or(False, m) read m."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model, run, tensor
from onnx import TensorProto, helper, numpy_helper

from winml_dynify import dynify


def _mask_model(op: str, fill: bool, fill_shape: list[int]) -> object:
    """``op(ConstantOfShape(fill_shape, fill), x > 0)`` over an input ``x`` [1, 4]."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"],
                              value=numpy_helper.from_array(np.array([fill]))),
             helper.make_node("Greater", ["x", "zero"], ["m"]),
             helper.make_node(op, ["c", "m"], ["y0"]),
             helper.make_node("Not", ["y0"], ["y"])]
    return make_model(nodes, [tensor("x", [1, 4])], [tensor("y", [1, 4], TensorProto.BOOL)],
                      {"shape": np.array(fill_shape, np.int64), "zero": np.array(0.0, np.float32)})


@pytest.mark.parametrize(("op", "fill"), [("And", True), ("Or", False)])
@pytest.mark.parametrize("fill_shape", [[], [1, 1]])
def test_an_identity_operand_is_dropped(rng, op, fill, fill_shape):
    res = dynify(_mask_model(op, fill, fill_shape), ["x:0=batch"])
    assert res.verified and any(r["rule"] == "identity" for r in res.rewrites)
    assert op not in {n.op_type for n in res.model.graph.node}
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], ~(x > 0))


@pytest.mark.parametrize(("op", "fill", "fill_shape"), [
    ("And", False, []),  # not the identity: the result is all False
    ("Or", True, []),
    ("And", True, [1, 1, 1]),  # broadcasting adds an axis: the result is not the other operand
])
def test_other_constants_keep_the_node(rng, op, fill, fill_shape):
    res = dynify(_mask_model(op, fill, fill_shape), ["x:0=batch"])
    assert not any(r["rule"] == "identity" for r in res.rewrites)
    assert op in {n.op_type for n in res.model.graph.node}
