"""rules/tables: position-only computations read from a table at the symbol's largest size (``--max``)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import make_model, run, tensor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from winml_dynify import UsageError, dynify
from winml_dynify.rules import tables
from winml_dynify.rules.tables import FREE, SIZE, TABLE, _kind

K = 6  # buckets


def _bias_model(seq: int = 8):
    """A T5-like relative-position bias: buckets of ``|j - i|`` (exact below 3, logarithmic above, capped)
    from folded row and column aranges, gathered from a learned table and added to attention scores."""
    nodes = [helper.make_node("Sub", ["cols", "rows"], ["d"]),
             helper.make_node("Abs", ["d"], ["a"]),
             helper.make_node("Less", ["a", "three"], ["small"]),
             helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
             helper.make_node("Log", ["af"], ["log"]),
             helper.make_node("Mul", ["log", "scale"], ["scaled"]),
             helper.make_node("Cast", ["scaled"], ["si"], to=TensorProto.INT64),
             helper.make_node("Add", ["si", "three"], ["large"]),
             helper.make_node("Min", ["large", "top"], ["capped"]),
             helper.make_node("Where", ["small", "a", "capped"], ["bucket"]),
             helper.make_node("Gather", ["emb", "bucket"], ["bias"]),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["scores"]),
             helper.make_node("Add", ["scores", "bias"], ["biased"]),
             helper.make_node("Softmax", ["biased"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"])]
    emb = np.random.default_rng(5).standard_normal(K).astype(np.float32)
    inits = {"cols": np.arange(seq, dtype=np.int64).reshape(1, seq),
             "rows": np.arange(seq, dtype=np.int64).reshape(seq, 1),
             "three": np.array(3, np.int64), "scale": np.array(1.5, np.float32), "top": np.array(K - 1, np.int64),
             "emb": emb}
    return make_model(nodes, [tensor("x", [1, seq, 4])], [tensor("y", [1, seq, 4])], inits), emb


def _reference(x: np.ndarray, emb: np.ndarray) -> np.ndarray:
    s = x.shape[1]
    a = np.abs(np.arange(s)[None, :] - np.arange(s)[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        large = np.minimum((np.log(a.astype(np.float32)) * np.float32(1.5)).astype(np.int64) + 3, K - 1)
    scores = x @ x.transpose(0, 2, 1) + emb[np.where(a < 3, a, large)]
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ x


def test_a_relative_position_bias_is_read_from_a_table_at_the_given_maximum(rng):
    model, emb = _bias_model()
    res = dynify(model, ["x:0=batch", "x:1=seq"], maxima={"seq": 20})
    assert res.verified and res.ranges["seq"].max == 20 and res.ranges["seq"].reason == "--max"
    assert any(r["rule"] == "position-table" for r in res.rewrites) and not res.notes
    ops = {n.op_type for n in res.model.graph.node}
    assert not ops & {"Log", "Abs", "Where", "Range"}, ops
    for shape in [(2, 3), (1, 20), (3, 1), (2, 8)]:
        x = rng.standard_normal((*shape, 4)).astype(np.float32)
        np.testing.assert_allclose(run(res.model, {"x": x})[0], _reference(x, emb), rtol=1e-5, atol=1e-5)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match="seq_must_be_at_most_20"):
        run(res.model, {"x": np.zeros((1, 21, 4), np.float32)})


def test_without_a_maximum_the_bias_is_computed_at_run_time(rng):
    model, emb = _bias_model()
    res = dynify(model, ["x:0=batch", "x:1=seq"])
    assert res.verified and res.ranges["seq"].max is None
    assert not any(r["rule"] == "position-table" for r in res.rewrites)
    assert len(res.notes) == 1 and "compute from seq positions alone; --max seq=N" in res.notes[0]  # the advice
    x = rng.standard_normal((2, 30, 4)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], _reference(x, emb), rtol=1e-5, atol=1e-5)


def test_a_table_over_the_size_limit_is_not_written(monkeypatch):
    monkeypatch.setattr(tables, "TABLE_BYTES", 16)
    res = dynify(_bias_model()[0], ["x:0=batch", "x:1=seq"], maxima={"seq": 20})
    assert res.verified and not any(r["rule"] == "position-table" for r in res.rewrites)


@pytest.mark.parametrize("maxima, match", [({"len": 20}, "unknown symbol"), ({"seq": 4}, "below the exported size")])
def test_a_bad_maximum_is_a_usage_error(maxima, match):
    with pytest.raises(UsageError, match=match):
        dynify(_bias_model()[0], ["x:0=batch", "x:1=seq"], maxima=maxima, verify=False)


def _node(op: str, n_in: int, **attrs):
    return helper.make_node(op, [f"i{k}" for k in range(n_in)], ["o"], **attrs)


@pytest.mark.parametrize("op, ins, labels, in_labels, want", [
    ("Range", [FREE, SIZE, FREE], ["s"], [[], [], []], TABLE),
    ("Range", [SIZE, SIZE, FREE], ["s"], [[], [], []], SIZE),  # starts at a size (past): not a table
    ("Sub", [SIZE, TABLE], ["s"], [[], ["s"]], None),  # ``s - i`` depends on the length
    ("LessOrEqual", [TABLE, TABLE], ["s", "s"], [[1, "s"], ["s", 1]], TABLE),
    ("Gather", [FREE, TABLE], ["s", 4], [[8, 4], ["s"]], TABLE),  # a constant table at positions
    ("Gather", [TABLE, FREE], [2], [["s"], [2]], None),  # fixed entries of a symbolic axis
    ("Reshape", [TABLE, SIZE], [1, "s", 1], [["s"], [3]], TABLE),  # unit axes only
    ("Reshape", [TABLE, FREE], ["s", 2], [[2, "s"], [2]], None),  # moves entries across axes
    ("MatMul", [TABLE, FREE], ["s", 3], [["s", 4], [4, 3]], TABLE),
    ("MatMul", [FREE, TABLE], [3, 4], [[3, "s"], ["s", 4]], None),  # contracts over the symbol
    ("ReduceSum", [TABLE], [1], [["s"]], None),
    ("Shape", [None], [2], [["s", 4]], SIZE),
])
def test_index_locality_op_by_op(op, ins, labels, in_labels, want):
    assert _kind(_node(op, len(ins)), ins, labels, in_labels) == want


# --- property: random index-local programs over positions, against the static graph at each size ----------

_UNARY = ["Abs", "Neg", "Sin", "Cos", "Exp", "Sigmoid", "Tanh"]
_BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


def _program_model(steps: list[tuple[str, int, int]], seq: int):
    """``x @ x^T + f(rows, cols)`` where ``f`` starts from float ``rows`` [seq, 1] and ``cols`` [1, seq]
    (folded aranges) and applies ``steps``: (op, operand a, operand b) over the values made so far."""
    vals = ["rows", "cols"]
    nodes = [helper.make_node("Cast", ["rows_i"], ["rows"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["cols_i"], ["cols"], to=TensorProto.FLOAT)]
    for k, (op, a, b) in enumerate(steps):
        out = f"v{k}"
        ins = [vals[a % len(vals)]] if op in _UNARY else [vals[a % len(vals)], vals[b % len(vals)]]
        if op in ("Sin", "Cos", "Exp", "Sigmoid", "Tanh"):  # keep magnitudes moderate
            nodes.append(helper.make_node("Mul", [ins[0], "tenth"], [f"{out}_s"]))
            ins = [f"{out}_s"]
        nodes.append(helper.make_node(op, ins, [out]))
        vals.append(out)
    nodes += [helper.make_node("Add", [vals[-1], "zero_ss"], ["bias"]),  # [seq, seq] whatever steps did
              helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
              helper.make_node("MatMul", ["x", "xt"], ["scores"]),
              helper.make_node("Add", ["scores", "bias"], ["y"])]
    inits = {"rows_i": np.arange(seq, dtype=np.int64).reshape(seq, 1),
             "cols_i": np.arange(seq, dtype=np.int64).reshape(1, seq),
             "tenth": np.array(0.1, np.float32), "zero_ss": np.zeros((seq, seq), np.float32)}
    return make_model(nodes, [tensor("x", [1, seq, 2])], [tensor("y", [1, seq, seq])], inits)


@settings(max_examples=12, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(_UNARY + _BINARY), st.integers(0, 9), st.integers(0, 9)),
                      min_size=1, max_size=6),
       sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3))
def test_tabulated_programs_match_the_static_graph_at_each_size(monkeypatch, steps, sizes):
    """Every table the rule writes (the gain threshold off) gives, at each size up to the maximum, what the
    graph built at that size gives: ground truth independent of the rewrite."""
    monkeypatch.setattr(tables, "MIN_GAIN", -100)
    res = dynify(_program_model(steps, 6), ["x:0=batch", "x:1=seq"], maxima={"seq": 12}, verify=False)
    assert any(r["rule"] == "position-table" for r in res.rewrites)
    rng = np.random.default_rng(len(steps))
    for s in sizes:
        x = rng.standard_normal((2, s, 2)).astype(np.float32)
        want = np.concatenate([run(_program_model(steps, s), {"x": x[i:i + 1]})[0] for i in range(2)])
        np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
