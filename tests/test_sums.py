"""Sizes that are sums of symbols (a KV cache), relations the graph requires between symbols, and position
ranges that start at the cache length, on small hand-built graphs against numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_model, run, tensor
from onnx import TensorProto, helper

from winml_dynify import dynify
from winml_dynify.dims import Poly
from winml_dynify.rewrite import RANGE_KEY

PAST, SEQ = Poly.symbol("past"), Poly.symbol("seq")


def _cache_model() -> tuple:
    """keys = Concat(past [b, 6, 8], x [b, 4, 8]) along axis 1, flattened by a baked Reshape [1, 80], and
    the keys plus a mask [b, total] broadcast over the last axis: total must be past + seq."""
    nodes = [helper.make_node("Concat", ["past", "x"], ["k"], axis=1),
             helper.make_node("Reshape", ["k", "flat"], ["y"]),
             helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "two"], ["m3"]),
             helper.make_node("Add", ["k", "m3"], ["z"])]
    return make_model(nodes, [tensor("past", [1, 6, 8]), tensor("x", [1, 4, 8]),
                              tensor("mask", [1, 10], TensorProto.INT64)],
                      [tensor("y", [1, 80]), tensor("z", [1, 10, 8])],
                      {"flat": np.array([1, 80], np.int64), "two": np.array([2], np.int64)})


AXES = ["past:0=batch", "past:1=past", "x:0=batch", "x:1=seq", "mask:0=batch", "mask:1=total"]


def test_sum_of_symbols_is_built_from_both_inputs(rng):
    res = dynify(_cache_model(), AXES, verify=False)
    assert res.outputs["y"] == ["batch", "8*past + 8*seq"]
    assert res.outputs["z"] == ["batch", "past + seq", 8]
    p, x = rng.standard_normal((3, 5, 8)).astype(np.float32), rng.standard_normal((3, 2, 8)).astype(np.float32)
    mask = rng.integers(0, 2, (3, 7)).astype(np.int64)
    y, z = run(res.model, {"past": p, "x": x, "mask": mask})
    k = np.concatenate([p, x], axis=1)
    np.testing.assert_array_equal(y, k.reshape(3, -1))
    np.testing.assert_array_equal(z, k + mask[..., None].astype(np.float32))


def test_required_relation_is_recorded_stored_and_checked_at_run_time(rng):
    res = dynify(_cache_model(), AXES, verify=False)
    assert res.ranges["total"].equals == PAST + SEQ
    props = {p.key: p.value for p in res.model.metadata_props}
    assert json.loads(props[RANGE_KEY])["total"]["equals"] == "past + seq"
    check = [n for n in res.model.graph.node if n.name == "dynify/check_total == past + seq"]
    assert len(check) == 1
    feeds = {"past": np.zeros((2, 5, 8), np.float32), "x": np.zeros((2, 2, 8), np.float32),
             "mask": np.ones((2, 9), np.int64)}  # 9 != 5 + 2
    with pytest.raises(Exception, match="check_total == past \\+ seq"):
        run(res.model, feeds)


def test_verification_shapes_follow_the_relation():
    res = dynify(_cache_model(), AXES)
    assert res.verified
    for c in res.report.checks:
        if "total" in c.shape:
            assert c.shape["total"] == c.shape["past"] + c.shape["seq"], c.shape


def _positions_model(start: int, with_cache: bool) -> tuple:
    """Folded position ids ``start + arange(4)`` gathering a table of 32 rows, added to new tokens' embeddings;
    with a cache, the new keys are concatenated to a past of length 6 (so ``past + seq`` is a size)."""
    table = np.random.default_rng(3).standard_normal((32, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "pos"], ["pe"]),
             helper.make_node("Add", ["x", "pe"], ["h"])]
    inputs = [tensor("x", [1, 4, 8])]
    outputs = [tensor("h", [1, 4, 8])]
    if with_cache:
        nodes.append(helper.make_node("Concat", ["past", "h"], ["k"], axis=1))
        inputs.append(tensor("past", [1, 6, 8]))
        outputs.append(tensor("k", [1, 10, 8]))
    inits = {"table": table, "pos": (start + np.arange(4, dtype=np.int64))[None]}
    return make_model(nodes, inputs, outputs, inits), table


def test_positions_after_the_cache_start_at_its_length(rng):
    m, table = _positions_model(6, with_cache=True)
    res = dynify(m, ["x:0=batch", "x:1=seq", "past:0=batch", "past:1=past"], verify=False)
    assert any(r["rule"] == "shifted-arange" and "arange(past, past + seq)" in r["detail"] for r in res.rewrites)
    x, p = rng.standard_normal((2, 3, 8)).astype(np.float32), rng.standard_normal((2, 11, 8)).astype(np.float32)
    h, _ = run(res.model, {"x": x, "past": p})
    np.testing.assert_allclose(h, x + table[11:14][None], rtol=1e-6)
    with pytest.raises(Exception, match="at_most_32"):  # past + seq beyond the table's rows
        run(res.model, {"x": x, "past": rng.standard_normal((2, 30, 8)).astype(np.float32)})


def test_a_constant_start_without_a_size_ending_there_stays(rng):
    """Positions from 6 on without any size past + seq in the graph (RoBERTa-style offset): kept constant."""
    m, table = _positions_model(6, with_cache=False)
    res = dynify(m, ["x:0=batch", "x:1=seq"], verify=False)
    assert not any(r["rule"] == "shifted-arange" for r in res.rewrites)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x + table[6:9][None], rtol=1e-6)
