"""The rewrite's bookkeeping on large or unusual graphs: pruning in one sweep, no copy of the caller's model
unless asked, node names kept through the self-check."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from conftest import OPSET, make_model, run, tensor
from onnx import helper

from winml_dynify import dynify
from winml_dynify.rewrite import _prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from synthetic import chain_model


def test_prune_keeps_a_node_read_only_inside_a_subgraph():
    branch = helper.make_graph([helper.make_node("Identity", ["c"], ["t"])], "then", [], [tensor("t", [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [tensor("e", [2])])
    nodes = [helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.ones(2, np.float32))),
             helper.make_node("Constant", [], ["dead"], value=onnx.numpy_helper.from_array(np.ones(2, np.float32))),
             helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)]
    model = make_model(nodes, [tensor("flag", [], onnx.TensorProto.BOOL), tensor("x", [2])], [tensor("y", [2])],
                       {"unused": np.zeros(3, np.float32)})
    assert _prune(model.graph) == 1
    assert [n.output[0] for n in model.graph.node] == ["c", "y"] and not model.graph.initializer
    assert run(model, {"flag": np.array(True), "x": np.zeros(2, np.float32)})[0].tolist() == [1.0, 1.0]


def test_the_shape_constants_a_rewrite_replaces_are_pruned():
    model = chain_model(2400)  # 300 blocks, each with two Constant Reshape targets baking seq
    res = dynify(model, ["x:1=seq"], verify=False)
    assert sum(n.op_type == "Constant" for n in res.model.graph.node) == 0
    x = np.random.default_rng(0).standard_normal((1, 11, 16)).astype(np.float32)
    assert run(res.model, {"x": x})[0].shape == (1, 11, 16)


def test_the_callers_model_is_left_alone_unless_inplace(rng):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = make_model(nodes, [tensor("x", [3, 4])], [tensor("y", [12])], {"shape": np.array([12], np.int64)})
    model.opset_import[0].version = OPSET
    before = model.SerializeToString()
    res = dynify(model, ["x:0=batch"], verify=False)
    assert model.SerializeToString() == before and res.model is not model
    res = dynify(model, ["x:0=batch"], verify=False, inplace=True)
    assert res.model is model and model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [n.name for n in res.model.graph.node] == [""]  # temporary names of the self-check removed
