"""Control flow and size-1 axes: Loop, Scan and If bodies, the values that decide them, and Reshapes or
Squeezes that only make sense at batch 1. Ground truth is the same graph built at the other shape."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model, run, tensor
from onnx import TensorProto, helper, numpy_helper

from winml_dynify import RefusedError, dynify
from winml_dynify.dims import Dim, const
from winml_dynify.rules.unit_axes import transpose_perm

FEAT, UNITS = 4, 5


def _const(name: str, value) -> helper.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _weights(rng) -> dict[str, np.ndarray]:
    return {"w": rng.standard_normal((FEAT, UNITS)).astype(np.float32) * 0.5,
            "u": rng.standard_normal((UNITS, UNITS)).astype(np.float32) * 0.5}


def _loop_rnn(batch: int, seq: int, weights: dict, counter: bool = False, trip: bool = True):
    """x [batch, seq, 4] read time-major by a Loop: h = tanh(x_t W + h U) from a zero state [batch, 5].
    ``counter``: the tf2onnx form, a carried int32 counter that indexes the rows and a ``Less(i + 1, seq)``
    condition; without ``trip`` that condition alone ends the loop."""
    f32, i64, b = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    body_in = [tensor("it", [], i64), tensor("c", [], b)]
    if counter:
        body_in.append(tensor("i", [], TensorProto.INT32))
    body_in.append(tensor("h", [batch, UNITS], f32))
    idx = "i" if counter else "it"
    nodes = [helper.make_node("Gather", ["xt", idx], ["row"], axis=0),
             helper.make_node("MatMul", ["row", "w"], ["a"]), helper.make_node("MatMul", ["h", "u"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Tanh", ["s"], ["h2"]),
             helper.make_node("Identity", ["h2"], ["y_t"])]
    outs = [tensor("c2", [], b)]
    if counter:
        nodes += [_const("one", np.array(1, np.int32)), helper.make_node("Add", ["i", "one"], ["i2"]),
                  helper.make_node("Cast", ["i2"], ["i2f"], to=TensorProto.FLOAT), _const("len", np.float32(seq)),
                  helper.make_node("Less", ["i2f", "len"], ["c2"])]
        outs.append(tensor("i2", [], TensorProto.INT32))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["c2"]))
    outs += [tensor("h2", [batch, UNITS], f32), tensor("y_t", [batch, UNITS], f32)]
    body = helper.make_graph(nodes, "body", body_in, outs)
    loop_in = ["m" if trip else "", "go"] + (["i0"] if counter else []) + ["h0"]
    loop_out = (["i_final"] if counter else []) + ["h_final", "ys"]
    inits = {"m": np.array(seq, np.int64), "go": np.array(True), "i0": np.array(0, np.int32),
             "h0": np.zeros((batch, UNITS), np.float32), **weights}
    if not counter:
        del inits["i0"]
    if not trip:
        del inits["m"]
    return make_model([helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
                       helper.make_node("Loop", loop_in, loop_out, body=body)],
                      [tensor("x", [batch, seq, FEAT])],
                      [tensor("h_final", [batch, UNITS]), tensor("ys", [seq, batch, UNITS])], inits)


def _parity(res, build, shapes, rng, name="x", feat=FEAT):
    for dims in shapes:
        x = rng.standard_normal((*dims, feat)).astype(np.float32)
        want = run(build(*dims), {name: x})
        got = run(res.model, {name: x})
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=str(dims))


@pytest.mark.parametrize("counter", [False, True], ids=["iteration-number", "tf2onnx-counter"])
def test_loop_trip_count_follows_seq_and_the_zero_state_follows_batch(rng, counter):
    """Trip count 5 = seq (the body reads row i of the time-major input), the zero state [3, 5] holds batch
    on axis 0 and units (5, equal to seq at export: the value trap) on axis 1, which must stay 5."""
    weights = _weights(rng)
    res = dynify(_loop_rnn(3, 5, weights, counter), ["x:0=batch", "x:1=seq"], verify=False)
    rules = {r["rule"] for r in res.rewrites}
    assert {"loop-count", "fill"} <= rules
    assert res.outputs["ys"] == ["seq", "batch", UNITS] and res.outputs["h_final"] == ["batch", UNITS]
    body = next(n for n in res.model.graph.node if n.op_type == "Loop").attribute[0].g
    state = next(vi for vi in body.input if vi.name == "h").type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in state] == ["batch", UNITS]  # the exported [3, 5] was stale
    _parity(res, lambda b, s: _loop_rnn(b, s, weights, counter), [(3, 5), (2, 7), (4, 2), (1, 9)], rng)


def test_a_while_loop_bound_follows_the_rows_it_reads(rng):
    """No trip count: ``Less(i + 1, 5)`` ends the loop, and 5 is the length of the rows the body reads."""
    weights = _weights(rng)
    res = dynify(_loop_rnn(3, 5, weights, counter=True, trip=False), ["x:0=batch", "x:1=seq"], verify=False)
    assert [r["detail"] for r in res.rewrites if r["rule"] == "loop-count"] == ["loop bound is seq at run time"]
    assert res.outputs["h_final"] == ["batch", UNITS]
    _parity(res, lambda b, s: _loop_rnn(b, s, weights, True, False), [(3, 5), (2, 7), (4, 2)], rng)


def _loop_over_batch(batch: int, by_row: bool):
    """A Loop with trip count = batch: either over the rows of x (``Gather(x, i)``), or summing x once per
    iteration (nothing ties the count to batch)."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    if by_row:
        nodes = [helper.make_node("Gather", ["x", "it"], ["row"], axis=0), _const("two", np.float32(2)),
                 helper.make_node("Mul", ["row", "two"], ["y_t"]), helper.make_node("Identity", ["c"], ["c2"]),
                 helper.make_node("Identity", ["acc"], ["acc2"])]
    else:
        nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                 helper.make_node("Add", ["acc", "s"], ["acc2"]),
                 helper.make_node("Identity", ["c"], ["c2"]), helper.make_node("Identity", ["s"], ["y_t"])]
    body = helper.make_graph(nodes, "body", [tensor("it", [], i64), tensor("c", [], TensorProto.BOOL),
                                             tensor("acc", [], f32)],
                             [tensor("c2", [], TensorProto.BOOL), tensor("acc2", [], f32), tensor("y_t", None, f32)])
    return make_model([helper.make_node("Loop", ["m", "go", "zero"], ["total", "ys"], body=body, name="loop")],
                      [tensor("x", [batch, FEAT])], [tensor("total", []), tensor("ys", None)],
                      {"m": np.array(batch, np.int64), "go": np.array(True), "zero": np.float32(0)})


def test_loop_over_the_rows_of_batch_is_rebuilt(rng):
    res = dynify(_loop_over_batch(3, by_row=True), ["x:0=batch"], verify=False)
    assert res.outputs["ys"] == ["batch", FEAT]
    for b in (3, 1, 6):
        x = rng.standard_normal((b, FEAT)).astype(np.float32)
        np.testing.assert_allclose(run(res.model, {"x": x})[1], x * 2, rtol=1e-6)


def test_a_trip_count_baked_as_batch_and_tied_to_nothing_is_refused():
    """Written as it was, the Loop would run 3 times at every batch size (wrong numbers, exit 0 before)."""
    with pytest.raises(RefusedError, match=r"node 'loop' \(Loop\): trip count 3 equals batch"):
        dynify(_loop_over_batch(3, by_row=False), ["x:0=batch"], verify=False)


def _shape_if(batch: int, seq: int):
    """``If(seq > 3)`` on the shape path, each branch reshaping x with a baked [batch, seq*4] target."""
    def branch(name: str, scale: float):
        return helper.make_graph(
            [_const(f"{name}_shape", np.array([batch, seq * FEAT], np.int64)),
             helper.make_node("Reshape", ["x", f"{name}_shape"], [f"{name}_r"]),
             _const(f"{name}_k", np.float32(scale)),
             helper.make_node("Mul", [f"{name}_r", f"{name}_k"], [f"{name}_y"])],
            name, [], [tensor(f"{name}_y", [batch, seq * FEAT])])

    return make_model([helper.make_node("Shape", ["x"], ["shp"]),
                       helper.make_node("Gather", ["shp", "one"], ["len"], axis=0),
                       helper.make_node("Greater", ["len", "three"], ["long"]),
                       helper.make_node("If", ["long"], ["y"], then_branch=branch("then", 1.0),
                                        else_branch=branch("else", -1.0))],
                      [tensor("x", [batch, seq, FEAT])], [tensor("y", [batch, seq * FEAT])],
                      {"one": np.array(1, np.int64), "three": np.array(3, np.int64)})


def test_if_on_the_shape_path_rewrites_both_branches(rng):
    res = dynify(_shape_if(2, 5), ["x:0=batch", "x:1=seq"], verify=False)
    assert sum(r["rule"] == "reshape-shape" for r in res.rewrites) == 2
    assert res.outputs["y"] == ["batch", f"{FEAT}*seq"] or res.outputs["y"] == ["batch", f"seq*{FEAT}"]
    _parity(res, _shape_if, [(2, 5), (3, 2), (1, 7)], rng)


def _scan_rnn(batch: int, seq: int, weights: dict):
    """Scan over axis 1 of x [batch, seq, 4] from a zero state [batch, 5]; outputs stacked on axis 1."""
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "w"], ["a"]), helper.make_node("MatMul", ["h", "u"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Tanh", ["s"], ["h2"]),
         helper.make_node("Identity", ["h2"], ["y_t"])],
        "body", [tensor("h", [batch, UNITS], f32), tensor("x_t", [batch, FEAT], f32)],
        [tensor("h2", [batch, UNITS], f32), tensor("y_t", [batch, UNITS], f32)])
    return make_model([helper.make_node("Scan", ["h0", "x"], ["h_final", "ys"], body=body, num_scan_inputs=1,
                                        scan_input_axes=[1], scan_output_axes=[1])],
                      [tensor("x", [batch, seq, FEAT])],
                      [tensor("h_final", [batch, UNITS]), tensor("ys", [batch, seq, UNITS])],
                      {"h0": np.zeros((batch, UNITS), np.float32), **weights})


def test_scan_state_follows_batch_and_outputs_take_the_scan_length(rng):
    weights = _weights(rng)
    res = dynify(_scan_rnn(3, 5, weights), ["x:0=batch", "x:1=seq"], verify=False)
    assert res.outputs["ys"] == ["batch", "seq", UNITS]
    _parity(res, lambda b, s: _scan_rnn(b, s, weights), [(3, 5), (2, 8), (1, 2)], rng)


def _time_weighted(batch: int, seq: int, as_reshape: bool):
    """x [batch, seq, 4] made time-major (a Reshape [seq, 1, 4] at batch 1, as tf2onnx writes it), weighted
    per step and summed over time."""
    move = (helper.make_node("Reshape", ["x", "tm"], ["xt"]) if as_reshape
            else helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
    return make_model([move, helper.make_node("Mul", ["xt", "wt"], ["p"]),
                       helper.make_node("ReduceSum", ["p", "ax0"], ["y"], keepdims=0)],
                      [tensor("x", [batch, seq, FEAT])], [tensor("y", [batch, FEAT])],
                      {"tm": np.array([seq, 1, FEAT], np.int64), "ax0": np.array([0], np.int64),
                       "wt": np.linspace(-1, 2, seq, dtype=np.float32).reshape(seq, 1, 1)})


def test_a_reshape_that_is_a_transpose_at_batch_1_becomes_a_transpose(rng):
    res = dynify(_time_weighted(1, 5, as_reshape=True), ["x:0=batch"], verify=False)
    assert [r["rule"] for r in res.rewrites if r["rule"] == "transpose"] == ["transpose"]
    assert any(n.op_type == "Transpose" for n in res.model.graph.node)
    _parity(res, lambda b, s: _time_weighted(b, s, as_reshape=False), [(1, 5), (3, 5), (6, 5)], rng)


def test_transpose_perm_needs_a_symbolic_unit_axis_that_changes_place():
    batch = Dim((1, 3, 5, 7))
    assert transpose_perm([batch, Dim(const(16)), Dim(const(32))], [16, 1, 32]) == [1, 0, 2]
    assert transpose_perm([Dim(const(1)), Dim(const(16)), Dim(const(32))], [16, 1, 32]) is None
    assert transpose_perm([batch, Dim(const(1)), Dim(const(16))], [1, 1, 16]) is None  # batch stays in front
    assert transpose_perm([batch, Dim(const(16)), Dim(const(32))], [16, 32]) is None  # a flatten, not a move


def test_a_flatten_split_back_in_the_other_order_transposes_first(rng):
    """[seq, 1, 4] -> [seq, 4] -> MatMul -> [1, seq, 3]: at batch 1 the first Reshape was a transpose then a
    flatten (tf2onnx's Tensordot after a time-major RNN); read as a flatten it would mix the samples."""
    w = rng.standard_normal((FEAT, 3)).astype(np.float32)
    m = make_model([helper.make_node("Reshape", ["x", "flat"], ["f"], name="flatten"),
                    helper.make_node("MatMul", ["f", "w"], ["g"]),
                    helper.make_node("Reshape", ["g", "back"], ["y"], name="split")],
                   [tensor("x", [5, 1, FEAT])], [tensor("y", [1, 5, 3])],
                   {"flat": np.array([5, FEAT], np.int64), "back": np.array([1, 5, 3], np.int64), "w": w})
    res = dynify(m, ["x:0=seq", "x:1=batch"], verify=False)
    assert [r["target"] for r in res.rewrites if r["rule"] == "transpose-first"] == ["flatten"]
    assert res.outputs["y"] == ["batch", "seq", 3]
    for seq, batch in ((5, 1), (7, 3), (2, 4)):
        x = rng.standard_normal((seq, batch, FEAT)).astype(np.float32)
        np.testing.assert_allclose(run(res.model, {"x": x})[0], np.transpose(x, (1, 0, 2)) @ w, rtol=1e-5, atol=1e-5)


def test_squeeze_without_axes_keeps_a_symbolic_unit_axis_for_gemm_bias(rng):
    """h [1, 8] @ W -> Squeeze() -> Gemm bias: at batch 3 the squeeze must not be attempted on batch."""
    w = rng.standard_normal((8, 6)).astype(np.float32)
    w2 = rng.standard_normal((3, 6)).astype(np.float32)
    m = make_model([helper.make_node("MatMul", ["h", "w"], ["hw"]), helper.make_node("Squeeze", ["hw"], ["bias"]),
                    helper.make_node("Gemm", ["x", "w2", "bias"], ["y"])],
                   [tensor("h", [1, 8]), tensor("x", [1, 3])], [tensor("y", [1, 6])], {"w": w, "w2": w2})
    res = dynify(m, ["h:0=batch", "x:0=batch"], verify=False)
    assert any(r["rule"] == "squeeze-axes" for r in res.rewrites)
    for b in (1, 3):
        h, x = rng.standard_normal((b, 8)).astype(np.float32), rng.standard_normal((b, 3)).astype(np.float32)
        np.testing.assert_allclose(run(res.model, {"h": h, "x": x})[0], x @ w2 + h @ w, rtol=1e-5, atol=1e-5)


def test_a_squeeze_of_an_axis_that_becomes_symbolic_is_refused():
    """A traced ``if frames == 1: x = x.squeeze(1)`` folded into a bare Squeeze at frames 1."""
    m = make_model([helper.make_node("Squeeze", ["x", "ax"], ["y"], name="sq")],
                   [tensor("x", [2, 1, FEAT])], [tensor("y", [2, FEAT])], {"ax": np.array([1], np.int64)})
    with pytest.raises(RefusedError, match=r"node 'sq' \(Squeeze\).*folded a size test"):
        dynify(m, ["x:1=frames"], verify=False)


def test_a_trip_count_over_the_rows_of_a_fixed_table_stays(rng):
    """Five iterations over the rows of a [5, 4] weight while seq is also 5 at export: a fixed count."""
    table = rng.standard_normal((5, FEAT)).astype(np.float32)
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Gather", ["table", "it"], ["row"], axis=0),
         helper.make_node("ReduceSum", ["x", "ax1"], ["s"], keepdims=0),
         helper.make_node("Mul", ["s", "row"], ["p"]), helper.make_node("Add", ["acc", "p"], ["acc2"]),
         helper.make_node("Identity", ["c"], ["c2"])],
        "body", [tensor("it", [], TensorProto.INT64), tensor("c", [], TensorProto.BOOL), tensor("acc", [3, FEAT], f32)],
        [tensor("c2", [], TensorProto.BOOL), tensor("acc2", [3, FEAT], f32)])
    m = make_model([helper.make_node("Loop", ["m", "go", "zero"], ["y"], body=body)],
                   [tensor("x", [3, 5, FEAT])], [tensor("y", [3, FEAT])],
                   {"m": np.array(5, np.int64), "go": np.array(True), "zero": np.zeros((3, FEAT), np.float32),
                    "table": table, "ax1": np.array([1], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"], verify=False)
    assert not any(r["rule"] == "loop-count" for r in res.rewrites)
    x = rng.standard_normal((2, 7, FEAT)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x.sum(1) * table.sum(0), rtol=1e-4, atol=1e-4)
