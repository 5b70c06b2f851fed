"""Each rewrite rule on a small hand-built graph, against numpy ground truth at another shape."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_model, mask_gather_model, run, tensor
from onnx import TensorProto, helper

from winml_dynify import RefusedError, UsageError, dynify


def test_reshape_head_split_with_minus_one_already_used(rng):
    """[1, 16, -1, 8] on (batch, seq, 32): batch and seq cannot both become -1."""
    m = make_model([helper.make_node("Reshape", ["x", "t"], ["r"]),
                    helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])],
                   [tensor("x", [1, 16, 32])], [tensor("y", [1, 4, 16, 8])],
                   {"t": np.array([1, 16, -1, 8], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert res.verified
    x = rng.standard_normal((3, 7, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], x.reshape(3, 7, 4, 8).transpose(0, 2, 1, 3))
    assert res.outputs["y"] == ["batch", 4, "seq", 8]


def test_flatten_and_unflatten_of_batch_times_seq(rng):
    """Gemm needs 2-D: (1,16,32) -> [16,32] -> Gemm -> [1,16,8]; the split of batch*seq is recovered."""
    w = rng.standard_normal((32, 8)).astype(np.float32)
    m = make_model([helper.make_node("Reshape", ["x", "t1"], ["f"]),
                    helper.make_node("Gemm", ["f", "w"], ["g"]),
                    helper.make_node("Reshape", ["g", "t2"], ["y"])],
                   [tensor("x", [1, 16, 32])], [tensor("y", [1, 16, 8])],
                   {"t1": np.array([16, 32], np.int64), "t2": np.array([1, 16, 8], np.int64), "w": w})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    x = rng.standard_normal((3, 5, 32)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)


def test_folded_position_ids_become_range(rng):
    """A folded arange (1, 16) gathering a position table becomes Range(seq)."""
    table = rng.standard_normal((64, 8)).astype(np.float32)
    emb = rng.standard_normal((50, 8)).astype(np.float32)
    m = make_model([helper.make_node("Gather", ["emb", "ids"], ["e"]),
                    helper.make_node("Gather", ["table", "pos"], ["p"]),
                    helper.make_node("Add", ["e", "p"], ["y"])],
                   [tensor("ids", [1, 16], TensorProto.INT64)], [tensor("y", [1, 16, 8])],
                   {"emb": emb, "table": table, "pos": np.arange(16, dtype=np.int64)[None]})
    res = dynify(m, ["ids:0=batch", "ids:1=seq"])
    assert any(r["rule"] == "affine" for r in res.rewrites)
    assert res.ranges["seq"].max == 64  # the position table has 64 rows
    ids = rng.integers(0, 50, (2, 9)).astype(np.int64)
    np.testing.assert_allclose(run(res.model, {"ids": ids})[0], emb[ids] + table[:9][None], rtol=1e-6)


def test_causal_mask_becomes_a_runtime_step_function(rng):
    """A folded (1, 16, 16) causal mask is rebuilt from the index difference, for any seq."""
    mask = np.triu(np.full((16, 16), -1e9, np.float32), 1)[None]
    m = make_model([helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                    helper.make_node("MatMul", ["x", "xt"], ["s"]),
                    helper.make_node("Add", ["s", "mask"], ["sm"]),
                    helper.make_node("Softmax", ["sm"], ["y"], axis=-1)],
                   [tensor("x", [1, 16, 4])], [tensor("y", [1, 16, 16])], {"mask": mask})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert any(r["rule"] == "causal-mask" for r in res.rewrites)
    x = rng.standard_normal((2, 23, 4)).astype(np.float32)
    s = x @ x.transpose(0, 2, 1) + np.triu(np.full((23, 23), -1e9, np.float32), 1)
    e = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(run(res.model, {"x": x})[0], e / e.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_fill_along_batch_is_expanded(rng):
    """A zeros constant (3, 4) added to (batch, 4) is a fill: it follows batch."""
    m = make_model([helper.make_node("Add", ["x", "z"], ["y"])], [tensor("x", [3, 4])], [tensor("y", [3, 4])],
                   {"z": np.ones((3, 4), np.float32)})
    res = dynify(m, ["x:0=batch"])
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x + 1)


def test_learned_table_on_symbolic_axis_is_refused(rng):
    """A random (1, 16, 8) table added along seq cannot be regenerated: refuse, naming it."""
    m = make_model([helper.make_node("Add", ["x", "pos_table"], ["y"])], [tensor("x", [1, 16, 8])],
                   [tensor("y", [1, 16, 8])], {"pos_table": rng.standard_normal((1, 16, 8)).astype(np.float32)})
    with pytest.raises(RefusedError, match="pos_table"):
        dynify(m, ["x:1=seq"])
    assert dynify(m, ["x:0=batch"]).verified


def test_slice_of_a_table_bounds_the_symbol(rng):
    """table[:16] added along seq becomes a run-time Slice, and seq is bounded by the table length."""
    table = rng.standard_normal((40, 8)).astype(np.float32)
    m = make_model([helper.make_node("Slice", ["table", "s", "e", "a"], ["p"]),
                    helper.make_node("Add", ["x", "p"], ["y"])],
                   [tensor("x", [1, 16, 8])], [tensor("y", [1, 16, 8])],
                   {"table": table, "s": np.array([0], np.int64), "e": np.array([16], np.int64),
                    "a": np.array([0], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert res.ranges["seq"].max == 40
    x = rng.standard_normal((2, 11, 8)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x + table[:11])
    with pytest.raises(Exception, match="seq_must_be_at_most_40"):  # out of range: a clear, named failure
        run(res.model, {"x": rng.standard_normal((1, 41, 8)).astype(np.float32)})


def test_slice_from_minus_n_of_a_folded_table_is_the_whole_axis(rng):
    """bias[-16:] of a folded (16, 16) causal bias (T5's ``position_bias[:, :, -seq:, :]``): the slice is the
    whole axis, so it follows the rebuilt bias instead of counting 16 rows from the end."""
    bias = np.triu(np.full((16, 16), -1e9, np.float32), 1)
    m = make_model([helper.make_node("Slice", ["bias", "s", "e", "a"], ["b"]),
                    helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                    helper.make_node("MatMul", ["x", "xt"], ["sc"]),
                    helper.make_node("Add", ["sc", "b"], ["y"])],
                   [tensor("x", [1, 16, 4])], [tensor("y", [1, 16, 16])],
                   {"bias": bias, "s": np.array([-16], np.int64), "e": np.array([2**62], np.int64),
                    "a": np.array([0], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert res.ranges["seq"].max is None
    x = rng.standard_normal((2, 23, 4)).astype(np.float32)
    want = x @ x.transpose(0, 2, 1) + np.triu(np.full((23, 23), -1e9, np.float32), 1)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-5, atol=1e-4)


def _tiny_decoder(rng, causal: bool):
    """ids (1, 16) -> embedding -> single-head attention with a folded (1, 16, 16) mask -> (1, 16, 4)."""
    mask = np.triu(np.full((16, 16), -1e9, np.float32), 1)[None] if causal else np.zeros((1, 16, 16), np.float32)
    return make_model([helper.make_node("Gather", ["emb", "ids"], ["x"]),
                       helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                       helper.make_node("MatMul", ["x", "xt"], ["s"]),
                       helper.make_node("Add", ["s", "mask"], ["sm"]),
                       helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
                       helper.make_node("MatMul", ["p", "x"], ["y"])],
                      [tensor("ids", [1, 16], TensorProto.INT64)], [tensor("y", [1, 16, 4])],
                      {"emb": rng.standard_normal((30, 4)).astype(np.float32), "mask": mask})


def test_prefix_oracle_applies_to_a_causal_token_model(rng):
    res = dynify(_tiny_decoder(rng, causal=True), ["ids:0=batch", "ids:1=seq"])
    prefix = [c for c in res.report.checks if c.oracle == "prefix"]
    assert prefix and all(c.status == "passed" for c in prefix)


def test_prefix_oracle_is_not_claimed_for_a_bidirectional_model(rng):
    res = dynify(_tiny_decoder(rng, causal=False), ["ids:0=batch", "ids:1=seq"])
    assert not [c for c in res.report.checks if c.oracle in ("prefix", "padding")]
    shorter = [c for c in res.report.checks if c.shape["seq"] != 16]
    assert shorter and all(c.status == "unverified" for c in shorter)


def test_constant_of_shape_range_and_tile_follow_seq(rng):
    """ConstantOfShape([1,16]), Range(0,16,1) and Tile(c, [1,16]) all become seq-long."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    m = make_model([helper.make_node("ConstantOfShape", ["shp"], ["ones"], value=one),
                    helper.make_node("Range", ["r0", "r16", "r1"], ["r"]),
                    helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
                    helper.make_node("Tile", ["c", "reps"], ["t"]),
                    helper.make_node("Add", ["x", "ones"], ["a"]),
                    helper.make_node("Add", ["a", "rf"], ["b"]),
                    helper.make_node("Add", ["b", "t"], ["y"])],
                   [tensor("x", [1, 16])], [tensor("y", [1, 16])],
                   {"shp": np.array([1, 16], np.int64), "r0": np.array(0, np.int64), "r16": np.array(16, np.int64),
                    "r1": np.array(1, np.int64), "c": np.full((1, 1), 5, np.float32),
                    "reps": np.array([1, 16], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    rules = {r["rule"] for r in res.rewrites}
    assert {"constantofshape-shape", "range-shape", "tile-shape"} <= rules
    x = rng.standard_normal((3, 9)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x + 1 + np.arange(9) + 5)


def test_baked_split_sizes_on_a_symbolic_axis_are_refused():
    m = make_model([helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
                    helper.make_node("Add", ["a", "b"], ["y"])],
                   [tensor("x", [1, 16, 4])], [tensor("y", [1, 8, 4])], {"sizes": np.array([8, 8], np.int64)})
    with pytest.raises(RefusedError, match="split sizes"):
        dynify(m, ["x:1=seq"])


@pytest.mark.parametrize("axes", [["mask:0=batch", "mask:1=seq"], ["mask:0=batch"]], ids=["batch-seq", "batch"])
def test_folded_batch_arange_in_a_flattened_mask_index(rng, axes):
    """The SDPA mask helper: index = arange(seq) + [[[[0]]]] * seq into Flatten(mask) of batch*seq.
    At batch 1 the batch arange folds to a zero; each sample must still read its own row, also when seq
    stays static (the row length is then the same at every size, but still read at run time)."""
    m = mask_gather_model(np.arange(16, dtype=np.int64))
    res = dynify(m, axes)
    assert any(r["rule"] == "arange" for r in res.rewrites)
    mask = rng.integers(0, 2, (3, 5 if len(axes) == 2 else 16)).astype(np.int64)
    np.testing.assert_array_equal(run(res.model, {"mask": mask})[0], mask[:, None, None, :])


def test_resize_to_a_baked_size_of_a_symbolic_axis_is_refused():
    """sizes [1, 3, 32, 32] on a (1, 3, 16, 16) input: fixed size or 2x scale? Refuse rather than guess."""
    m = make_model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest")],
                   [tensor("x", [1, 3, 16, 16])], [tensor("y", [1, 3, 32, 32])],
                   {"sizes": np.array([1, 3, 32, 32], np.int64)})
    with pytest.raises(RefusedError, match="baked size 32"):
        dynify(m, ["x:2=height", "x:3=width"])
    assert dynify(m, ["x:0=batch"]).verified


def test_folded_mean_divisor_follows_the_reduced_sizes(rng):
    """sum(x, axis=1) / 16.0 is a mean over seq: the divisor becomes seq at run time; 2.0 * sum stays."""
    m = make_model([helper.make_node("ReduceSum", ["x", "ax"], ["s"], keepdims=0),
                    helper.make_node("Div", ["s", "n"], ["mean"], name="mean_div"),
                    helper.make_node("Mul", ["s", "two"], ["y2"])],
                   [tensor("x", [1, 16, 4])], [tensor("mean", [1, 4]), tensor("y2", [1, 4])],
                   {"ax": np.array([1], np.int64), "n": np.array(16.0, np.float32),
                    "two": np.array(2.0, np.float32)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert [r["target"] for r in res.rewrites if r["rule"] == "mean-divisor"] == ["mean_div"]
    x = rng.standard_normal((2, 7, 4)).astype(np.float32)
    mean, y2 = run(res.model, {"x": x})
    np.testing.assert_allclose(mean, x.mean(1), rtol=1e-5)
    np.testing.assert_allclose(y2, 2 * x.sum(1), rtol=1e-5)


def test_downsample_then_upsample_restricts_sizes_to_multiples(rng):
    """Conv stride 2, nearest upsample x2, concat with the input: only even sizes line up."""
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
                    helper.make_node("Resize", ["c", "", "scales"], ["u"], mode="nearest"),
                    helper.make_node("Concat", ["x", "u"], ["y"], axis=1)],
                   [tensor("x", [1, 2, 16, 16])], [tensor("y", [1, 4, 16, 16])],
                   {"w": w, "scales": np.array([1, 1, 2, 2], np.float32)})
    res = dynify(m, ["x:0=batch", "x:2=height", "x:3=width"])
    assert res.ranges["height"].multiple == 2 and res.ranges["width"].multiple == 2
    assert all(c.shape["height"] % 2 == 0 for c in res.report.checks)
    out = run(res.model, {"x": rng.standard_normal((1, 2, 10, 14)).astype(np.float32)})[0]
    assert out.shape == (1, 4, 10, 14)


def test_gather_nd_index_pairs_with_a_folded_row(rng):
    """Dynamo exports index the mask with folded [row, col] pairs: rows become arange(batch), cols arange(seq)."""
    pairs = np.stack([np.zeros(16, np.int64), np.arange(16)], -1).reshape(1, 1, 1, 16, 2)
    m = make_model([helper.make_node("GatherND", ["mask", "pairs"], ["g"]),
                    helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.FLOAT),
                    helper.make_node("Mul", ["gf", "x"], ["y"])],
                   [tensor("mask", [1, 16], TensorProto.INT64), tensor("x", [1, 1, 1, 16])],
                   [tensor("y", [1, 1, 1, 16])], {"pairs": pairs})
    res = dynify(m, ["mask:0=batch", "mask:1=seq", "x:0=batch", "x:3=seq"])
    assert res.verified
    mask = rng.integers(0, 2, (3, 5)).astype(np.int64)
    x = rng.standard_normal((3, 1, 1, 5)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"mask": mask, "x": x})[0], mask[:, None, None, :] * x)


def test_local_attention_band_mask_extends(rng):
    """A band (causal, window 4) folded at 16: rebuilt from j - i, so it holds at any length."""
    i, j = np.arange(16)[:, None], np.arange(16)[None]
    band = ((j <= i) & (i - j < 4))[None]
    m = make_model([helper.make_node("Where", ["band", "x", "neg"], ["y"])],
                   [tensor("x", [1, 16, 16])], [tensor("y", [1, 16, 16])],
                   {"band": band, "neg": np.array(-1e9, np.float32)})
    res = dynify(m, ["x:1=seq", "x:2=seq"])
    assert any(r["rule"] == "band-mask" for r in res.rewrites)
    n = 23
    x = rng.standard_normal((1, n, n)).astype(np.float32)
    i, j = np.arange(n)[:, None], np.arange(n)[None]
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], np.where((j <= i) & (i - j < 4), x, -1e9))


def test_seq_first_head_merge_puts_batch_where_the_weight_allows(rng):
    """(seq, batch, 32) -> [16, 4, 8] -> [16, 32] -> Gemm: at batch 1 the batch factor could sit on either
    axis of [16, 32]; the weight's in-features (32) decide it is seq*batch."""
    w = rng.standard_normal((32, 8)).astype(np.float32)
    m = make_model([helper.make_node("Reshape", ["x", "heads"], ["h"]),
                    helper.make_node("Transpose", ["h"], ["t"], perm=[1, 0, 2]),
                    helper.make_node("Transpose", ["t"], ["u"], perm=[1, 0, 2]),
                    helper.make_node("Reshape", ["u", "flat"], ["f"]),
                    helper.make_node("Gemm", ["f", "w"], ["g"]),
                    helper.make_node("Reshape", ["g", "back"], ["y"])],
                   [tensor("x", [16, 1, 32])], [tensor("y", [16, 1, 8])],
                   {"heads": np.array([16, 4, 8], np.int64), "flat": np.array([16, 32], np.int64),
                    "back": np.array([16, 1, 8], np.int64), "w": w})
    res = dynify(m, ["x:0=seq", "x:1=batch"])
    x = rng.standard_normal((7, 3, 32)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)


def test_flattened_feature_map_splits_back_into_height_and_width(rng):
    """(1, C, h, w) -> [1, C, h*w] -> Transpose -> ... -> [1, C, 8, 8]: h*w is no product of symbols
    (strided), it splits into the sizes the conv produced, in their axis order even when h == w."""
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
                    helper.make_node("Reshape", ["c", "flat"], ["f"]),
                    helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
                    helper.make_node("Transpose", ["t"], ["u"], perm=[0, 2, 1]),
                    helper.make_node("Reshape", ["u", "grid"], ["y"])],
                   [tensor("x", [1, 3, 16, 16])], [tensor("c", [1, 2, 8, 8]), tensor("y", [1, 2, 8, 8])],
                   {"w": w, "flat": np.array([1, 2, 64], np.int64), "grid": np.array([1, 2, 8, 8], np.int64)})
    res = dynify(m, ["x:0=batch", "x:2=height", "x:3=width"])
    c, y = run(res.model, {"x": rng.standard_normal((2, 3, 10, 14)).astype(np.float32)})
    assert c.shape == (2, 2, 5, 7)
    np.testing.assert_array_equal(y, c)


@pytest.mark.parametrize("grid", [[1, 2, 1, 1], [1, 1, 1, 2]])
def test_a_feature_map_flattened_at_1x1_is_refused_not_guessed(grid):
    """The same at a 2x2 input: the conv gives 1x1, so ``[1, 2, 1]`` -> ``[1, 2, 1, 1]`` (or, channels last,
    ``[1, 1, 1, 2]``) could be ``[b, C, h', w']`` or ``[b, C, h'*w', 1]``: no shape tells which (PVTv2 at
    32x32 took the second, and was wrong at 64x64)."""
    w = np.ones((2, 3, 3, 3), np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
                    helper.make_node("Reshape", ["c", "flat"], ["f"]),
                    helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
                    helper.make_node("Reshape", ["t" if grid[-1] == 2 else "f", "grid"], ["y"])],
                   [tensor("x", [1, 3, 2, 2])], [tensor("y", grid)],
                   {"w": w, "flat": np.array([1, 2, 1], np.int64), "grid": np.array(grid, np.int64)})
    with pytest.raises(RefusedError, match=r"cannot tell whether input dim \d .* spreads over target entries"):
        dynify(m, ["x:0=batch", "x:2=height", "x:3=width"])
    assert dynify(m, ["x:0=batch"]).verified  # batch alone: the 1s are static


def test_an_input_already_dynamic_in_batch_keeps_it_when_seq_is_added(rng):
    """ids [batch, 16]: asking for seq alone carries the existing batch symbol through the rewrite."""
    table = rng.standard_normal((64, 8)).astype(np.float32)
    emb = rng.standard_normal((50, 8)).astype(np.float32)
    m = make_model([helper.make_node("Gather", ["emb", "ids"], ["e"]),
                    helper.make_node("Gather", ["table", "pos"], ["p"]),
                    helper.make_node("Add", ["e", "p"], ["y"])],
                   [tensor("ids", ["batch", 16], TensorProto.INT64)], [tensor("y", ["batch", 16, 8])],
                   {"emb": emb, "table": table, "pos": np.arange(16, dtype=np.int64)[None]})
    res = dynify(m, ["ids:1=seq"])
    dims = [d.dim_param for d in res.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"] and res.verified
    ids = rng.integers(0, 50, (3, 9)).astype(np.int64)
    np.testing.assert_allclose(run(res.model, {"ids": ids})[0], emb[ids] + table[:9][None], rtol=1e-6)


def test_unnamed_dynamic_dims_are_named_on_request(rng):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [None, 4])], [tensor("y", [None, 4])])
    with pytest.raises(UsageError, match="dynamic but unnamed"):
        dynify(m, ["x:1=width"])
    res = dynify(m, ["x:0=batch"])
    assert res.verified and res.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_folded_rotary_tables_become_cos_and_sin_of_a_range(rng):
    """cos/sin(position * inv_freq) folded at 16 positions: rebuilt for any length."""
    inv = (1.0 / 10000 ** (np.arange(4) / 4)).astype(np.float32)
    ang = np.arange(16, dtype=np.float32)[:, None] * inv
    m = make_model([helper.make_node("Mul", ["x", "cos"], ["a"]),
                    helper.make_node("Mul", ["x", "sin"], ["b"]),
                    helper.make_node("Add", ["a", "b"], ["y"])],
                   [tensor("x", [1, 16, 4])], [tensor("y", [1, 16, 4])],
                   {"cos": np.cos(ang)[None], "sin": np.sin(ang)[None]})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert {"rotary-cos", "rotary-sin"} <= {r["rule"] for r in res.rewrites}
    x = rng.standard_normal((2, 29, 4)).astype(np.float32)
    ang = np.arange(29, dtype=np.float32)[:, None] * inv
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x * np.cos(ang) + x * np.sin(ang), atol=1e-4)


def test_reshape_target_from_folded_float_arithmetic(rng):
    """A target computed in float (``int(ceil(5 / 2)) * 2`` rows of patches, traced from Python math on
    static sizes) is evaluated through Div/Ceil/Cast, so its folded batch entry is found and rewritten."""
    f = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor(  # noqa: E731
        name, TensorProto.FLOAT, [], [v]))
    m = make_model([f("five", 5.0), f("two", 2.0),
                    helper.make_node("Div", ["five", "two"], ["q"]),
                    helper.make_node("Ceil", ["q"], ["c"]),
                    helper.make_node("Cast", ["c"], ["ci"], to=TensorProto.INT64),
                    helper.make_node("Mul", ["bc", "ci"], ["rows"]),
                    helper.make_node("Unsqueeze", ["rows", "zero"], ["rows1"]),
                    helper.make_node("Concat", ["rows1", "rest"], ["t"], axis=0),
                    helper.make_node("Reshape", ["x", "t"], ["p"]),
                    helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 2, 1, 3]),
                    helper.make_node("Reshape", ["pt", "back"], ["y"])],
                   [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 2, 6, 6])],
                   {"bc": np.array(2, np.int64), "zero": np.array([0], np.int64),
                    "rest": np.array([2, 3, 2], np.int64), "back": np.array([1, 2, 6, 6], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert res.verified and res.outputs["y"] == ["batch", 2, 6, 6]
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    want = x.reshape(18, 2, 3, 2).transpose(0, 2, 1, 3).reshape(3, 2, 6, 6)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], want)


def _grid_model(h: int, w: int, table: np.ndarray, k: np.ndarray) -> onnx.ModelProto:
    """Patchify (stride-8 conv), flatten the grid, add a position table resized to the grid: the
    interpolated position embeddings of DINOv2-style ViTs, exported at an image of ``h`` x ``w``."""
    return make_model([helper.make_node("Conv", ["x", "k"], ["c"], strides=[8, 8]),
                       helper.make_node("Reshape", ["c", "flat"], ["f"]),
                       helper.make_node("Shape", ["table"], ["ts"], end=2),
                       helper.make_node("Concat", ["ts", "grid"], ["sizes"], axis=0),
                       helper.make_node("Resize", ["table", "", "", "sizes"], ["r"], mode="linear"),
                       helper.make_node("Reshape", ["r", "flat"], ["rf"]),
                       helper.make_node("Add", ["f", "rf"], ["y"])],
                      [tensor("x", [1, 2, h, w])], [tensor("y", [1, 2, h * w // 64])],
                      {"k": k, "table": table, "flat": np.array([1, 2, -1], np.int64),
                       "grid": np.array([h // 8, w // 8], np.int64)})


def test_resized_position_grid_follows_the_patch_grid(rng):
    """The baked resize size [2, 2] meets the patch grid only through flatten and Add; matching the
    flattened pieces in order binds it to (height/8, width/8), which stay apart at every sample point
    although the export is square. Checked against a static export at 24 x 40."""
    table = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    k = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    res = dynify(_grid_model(16, 16, table, k), ["x:2=height", "x:3=width"])
    x = rng.standard_normal((1, 2, 24, 40)).astype(np.float32)
    want = run(_grid_model(24, 40, table, k), {"x": x})[0]
    np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


def test_a_literal_equal_to_seq_is_unchosen_when_a_later_reshape_cannot_split_it(rng):
    """A folded ``[16, 16]`` (batch*seq, 16 hidden units) at seq 16: the first guess puts seq in the second
    16; the next Reshape ``[1, -1, 2, 8]`` cannot split seq into [2, 8], so that 16 is pinned and batch*seq
    goes to the first."""
    m = make_model([helper.make_node("Reshape", ["x", "t1"], ["a"]),
                    helper.make_node("Reshape", ["a", "t2"], ["b"]),
                    helper.make_node("Reshape", ["b", "t3"], ["y"])],
                   [tensor("x", [1, 16, 16])], [tensor("y", [1, 16, 2, 8])],
                   {"t1": np.array([-1, 8], np.int64), "t2": np.array([16, 16], np.int64),
                    "t3": np.array([1, -1, 2, 8], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert res.outputs["y"] == ["batch", "seq", 2, 8]
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], x.reshape(3, 5, 2, 8))


def test_a_trailing_unit_axis_after_a_split_takes_no_symbol(rng):
    """``[-1, 5, 1]`` of (batch, seq, 10) at batch 1: the trailing 1 is a unit axis for a MatMul, so
    batch stays in -1 with seq (ConvBERT's span kernels)."""
    m = make_model([helper.make_node("Reshape", ["x", "row"], ["r"]),
                    helper.make_node("Reshape", ["x", "col"], ["c"]),
                    helper.make_node("MatMul", ["r", "c"], ["p"]),
                    helper.make_node("Reshape", ["p", "back"], ["y"])],
                   [tensor("x", [1, 16, 10])], [tensor("y", [1, 16, 2])],
                   {"row": np.array([-1, 1, 5], np.int64), "col": np.array([-1, 5, 1], np.int64),
                    "back": np.array([1, 16, 2], np.int64)})
    res = dynify(m, ["x:0=batch", "x:1=seq"])
    assert res.outputs["y"] == ["batch", "seq", 2]
    x = rng.standard_normal((3, 5, 10)).astype(np.float32)
    v = x.reshape(-1, 5)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], (v * v).sum(-1).reshape(3, 5, 2), rtol=1e-5)


def test_a_guess_that_puts_batch_where_a_static_dim_belongs_is_undone(rng):
    """Seq-first attention at batch 1 with seq static: the mask ``[b, 4, 1, 16] -> [4, 1, 16]`` (batch*heads,
    1, keys) is first guessed as ``[4, b, 16]``; added to scores ``[4*b, 16, 16]`` the guessed batch meets
    the static query length, so the guess is undone and batch joins the heads."""
    m = make_model([helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
                    helper.make_node("Reshape", ["xt", "t1"], ["q"]),
                    helper.make_node("Transpose", ["q"], ["qt"], perm=[1, 0, 2]),
                    helper.make_node("Transpose", ["qt"], ["kt"], perm=[0, 2, 1]),
                    helper.make_node("MatMul", ["qt", "kt"], ["s"]),
                    helper.make_node("Reshape", ["mask", "t2"], ["mr"]),
                    helper.make_node("Add", ["s", "mr"], ["y"])],
                   [tensor("x", [1, 16, 8]), tensor("mask", [1, 4, 1, 16])], [tensor("y", [4, 16, 16])],
                   {"t1": np.array([16, 4, 2], np.int64), "t2": np.array([4, 1, 16], np.int64)})
    res = dynify(m, ["x:0=batch", "mask:0=batch"])
    assert res.outputs["y"] == ["4*batch", 16, 16]
    x = rng.standard_normal((3, 16, 8)).astype(np.float32)
    mask = rng.standard_normal((3, 4, 1, 16)).astype(np.float32)
    q = x.transpose(1, 0, 2).reshape(16, 12, 2).transpose(1, 0, 2)
    want = q @ q.transpose(0, 2, 1) + mask.reshape(12, 1, 16)
    np.testing.assert_allclose(run(res.model, {"x": x, "mask": mask})[0], want, rtol=1e-5, atol=1e-5)


def test_argmax_rows_into_a_flattened_batch_get_their_offset_back(rng):
    """``hidden[arange(batch), ids.argmax(-1)]`` with the zero offset optimised away at batch 1: each
    sample must read its own row of the flattened ``batch * seq`` axis."""
    m = make_model([helper.make_node("ArgMax", ["ids"], ["am"], axis=-1, keepdims=0),
                    helper.make_node("Flatten", ["x"], ["flat"], axis=2),
                    helper.make_node("Gather", ["flat", "am"], ["y"], axis=0)],
                   [tensor("ids", [1, 16], TensorProto.INT64), tensor("x", [1, 16, 8])], [tensor("y", [1, 8])])
    res = dynify(m, ["ids:0=batch", "ids:1=seq", "x:0=batch", "x:1=seq"], verify=False)
    # the offset put back, and the row pick it makes read as one GatherND (rules/flat_gathers.py)
    assert [r["rule"] for r in res.rewrites] == ["row-index", "flat-gather"]
    ids = rng.integers(0, 50, (3, 5)).astype(np.int64)
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"ids": ids, "x": x})[0], x[np.arange(3), ids.argmax(-1)])


def test_reshapes_at_a_decode_step_keep_batch_and_seq_apart(rng):
    """[1, 1, 32] -> [-1, 32] -> MatMul -> [1, 1, 8] at batch 1 and seq 1: the flatten holds batch*seq in
    its one output 1, and the unflatten gives batch and seq back to the two 1s, not their product to one."""
    w = rng.standard_normal((32, 8)).astype(np.float32)
    m = make_model([helper.make_node("Reshape", ["x", "t1"], ["f"]),
                    helper.make_node("MatMul", ["f", "w"], ["g"]),
                    helper.make_node("Reshape", ["g", "t2"], ["y"])],
                   [tensor("x", [1, 1, 32])], [tensor("y", [1, 1, 8])],
                   {"t1": np.array([-1, 32], np.int64), "t2": np.array([1, 1, 8], np.int64), "w": w})
    res = dynify(m, ["x:0=batch", "x:1=seq"], shapes={"seq": [1]})
    assert res.outputs["y"] == ["batch", "seq", 8]
    x = rng.standard_normal((3, 5, 32)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)


def test_the_one_position_of_a_decode_step_follows_the_cache_length(rng):
    """A decode step (one new token after a cache of 8) folds its position id to [[8]]; the cache grows
    to past + 1, so the position is read as ``past`` and the table row moves with it."""
    table = rng.standard_normal((32, 4)).astype(np.float32)
    emb = rng.standard_normal((20, 4)).astype(np.float32)
    m = make_model([helper.make_node("Gather", ["emb", "ids"], ["e"]),
                    helper.make_node("Gather", ["table", "pos"], ["p"]),
                    helper.make_node("Add", ["e", "p"], ["x"]),
                    helper.make_node("Concat", ["past", "x"], ["y"], axis=1)],
                   [tensor("ids", [1, 1], TensorProto.INT64), tensor("past", [1, 8, 4])], [tensor("y", [1, 9, 4])],
                   {"emb": emb, "table": table, "pos": np.array([[8]], np.int64)})
    res = dynify(m, ["ids:0=batch", "past:0=batch", "past:1=past"])
    assert any(r["rule"] == "shifted-arange" for r in res.rewrites)
    assert res.ranges["past"].max == 31  # the new token's row must exist
    ids, past = rng.integers(0, 20, (2, 1)), rng.standard_normal((2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"ids": ids, "past": past})[0][:, -1], emb[ids[:, 0]] + table[5])


def test_shape_arithmetic_on_static_axes_becomes_constant(rng):
    """``x.view(-1, x.shape[1] // 2, 2, x.shape[2])`` on (batch, 8, 4) with batch symbolic: the sizes read
    from the static axes fold to constants (no Shape of them is left), the batch still flows."""
    m = make_model([helper.make_node("Shape", ["x"], ["s"]),
                    helper.make_node("Gather", ["s", "one"], ["h"], axis=0),
                    helper.make_node("Gather", ["s", "two"], ["c"], axis=0),
                    helper.make_node("Div", ["h", "two"], ["h2"]),
                    helper.make_node("Unsqueeze", ["h2", "zero"], ["h2v"]),
                    helper.make_node("Unsqueeze", ["c", "zero"], ["cv"]),
                    helper.make_node("Concat", ["minus1", "h2v", "twov", "cv"], ["t"], axis=0),
                    helper.make_node("Reshape", ["x", "t"], ["y"])],
                   [tensor("x", [1, 8, 4])], [tensor("y", [1, 4, 2, 4])],
                   {"one": np.array(1, np.int64), "two": np.array(2, np.int64), "zero": np.array([0], np.int64),
                    "minus1": np.array([-1], np.int64), "twov": np.array([2], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert not any(n.op_type in ("Shape", "Gather", "Div") for n in res.model.graph.node)
    assert any(r["rule"] == "static-shape" for r in res.rewrites)
    x = rng.standard_normal((3, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], x.reshape(3, 4, 2, 4))


def test_a_computed_target_entry_that_copies_the_input_dim_becomes_0(rng):
    """The same view with the leading axis read from the Shape (``x.shape[0]``): that entry follows batch; it
    is x's own dim 0, so the target becomes the constant ``[0, 4, 2, 4]`` and no Shape is left."""
    m = make_model([helper.make_node("Shape", ["x"], ["s"]),
                    helper.make_node("Gather", ["s", "zero_s"], ["b"], axis=0),
                    helper.make_node("Unsqueeze", ["b", "zero"], ["bv"]),
                    helper.make_node("Concat", ["bv", "rest"], ["t"], axis=0),
                    helper.make_node("Reshape", ["x", "t"], ["y"])],
                   [tensor("x", [1, 8, 4])], [tensor("y", [1, 4, 2, 4])],
                   {"zero_s": np.array(0, np.int64), "zero": np.array([0], np.int64),
                    "rest": np.array([4, 2, 4], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert res.verified
    assert not any(n.op_type in ("Shape", "Concat") for n in res.model.graph.node)
    assert _target(res.model).tolist() == [0, 4, 2, 4]
    x = rng.standard_normal((5, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], x.reshape(5, 4, 2, 4))


def _target(model: onnx.ModelProto) -> np.ndarray:
    """The constant target of the model's one Reshape."""
    name = next(n.input[1] for n in model.graph.node if n.op_type == "Reshape")
    return onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _windows(shape_of: str, rest: np.ndarray, allowzero: int = 0) -> onnx.ModelProto:
    """``h.view(y.shape[0], *rest)`` with ``h = relu(x.view(-1, 8))`` (``2 * batch`` rows): the leading entry is
    read from another tensor and is not h's dim 0 (a Swin window count); ``rest`` are the static entries. (The
    Relu keeps the two Reshapes from being one chain.)"""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("Shape", [shape_of], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Concat", ["b", "rest"], ["t"], axis=0),
             helper.make_node("Reshape", ["h", "t"], ["r"], allowzero=allowzero),
             helper.make_node("Relu", ["r"], ["out"])]
    m = make_model(nodes, [tensor("x", [1, 2, 8]), tensor("y", [1, 3])], [tensor("out", [1, 4, 4])],
                   {"flat": np.array([-1, 8], np.int64), "zero": np.array([0], np.int64), "rest": rest})
    return m


def test_a_computed_target_entry_read_from_another_tensor_becomes_minus_1(rng):
    m = _windows("y", np.array([4, 4], np.int64))
    res = dynify(m, ["x:0=batch", "y:0=batch"])
    assert res.verified and any(r["rule"] == "constant-reshape-target" for r in res.rewrites)
    name = next(n.input[1] for n in res.model.graph.node if n.output[0] == "r")
    target = onnx.numpy_helper.to_array(next(t for t in res.model.graph.initializer if t.name == name))
    assert target.tolist() == [-1, 4, 4]
    assert not any(n.op_type == "Shape" and n.input[0] == "y" for n in res.model.graph.node)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    got = run(res.model, {"x": x, "y": np.zeros((3, 3), np.float32)})[0]
    np.testing.assert_array_equal(got, np.maximum(x.reshape(3, 4, 4), 0))


@pytest.mark.parametrize("case", ["minus1 taken", "allowzero"])
def test_a_computed_target_stays_when_no_constant_says_the_same(rng, case):
    """A ``-1`` already among the entries leaves none for the read one; with ``allowzero`` a 0 entry is a
    size, not a copy: both targets stay computed."""
    rest = np.array([-1, 4] if case == "minus1 taken" else [4, 4], np.int64)
    m = _windows("y", rest, allowzero=int(case == "allowzero"))
    res = dynify(m, ["x:0=batch", "y:0=batch"])
    assert res.verified
    assert not any(r["rule"] == "constant-reshape-target" for r in res.rewrites)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    got = run(res.model, {"x": x, "y": np.zeros((3, 3), np.float32)})[0]
    np.testing.assert_array_equal(got, np.maximum(x.reshape(3, 4, 4), 0))


def test_a_size_read_from_another_tensor_uses_the_shared_source(rng):
    """``y = x.view(2, 2, 2).view(2, -1) * h + ones(h.shape[0], 4)`` with ``h = relu(x)`` and batch symbolic:
    the first view's rewrite reads batch from Shape(x), and the model's own read of it from Shape(h) is
    redirected there: one Shape is left."""
    m = make_model([helper.make_node("Relu", ["x"], ["h"]),
                    helper.make_node("Reshape", ["x", "t"], ["r"]),
                    helper.make_node("Shape", ["h"], ["s"]),
                    helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
                    helper.make_node("Concat", ["b", "four"], ["bs"], axis=0),
                    helper.make_node("ConstantOfShape", ["bs"], ["ones"],
                                     value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
                    helper.make_node("Reshape", ["r", "t2"], ["r2"]),
                    helper.make_node("Mul", ["r2", "h"], ["p"]),
                    helper.make_node("Add", ["p", "ones"], ["y"])],
                   [tensor("x", [2, 4])], [tensor("y", [2, 4])],
                   {"t": np.array([2, 2, 2], np.int64), "zero": np.array([0], np.int64),
                    "t2": np.array([2, -1], np.int64), "four": np.array([4], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert res.verified
    assert any(r["rule"] == "shared-shape" for r in res.rewrites)
    assert [list(n.input) for n in res.model.graph.node if n.op_type == "Shape"] == [["x"]]
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x * np.maximum(x, 0) + 1, rtol=1e-6)


@pytest.mark.parametrize("other", [[1, 8], [1, 1]])
def test_a_fill_is_expanded_only_where_the_other_operand_does_not_broadcast_to_it(rng, other):
    """``min(x, full((1, 8), 3))`` with axis 1 symbolic: when the other operand already has the output's
    shape, the fill stays one element wide (no run-time Expand); against a ``[1, 1]`` operand its own width
    is the output's, and it is expanded."""
    m = make_model([helper.make_node("Relu", ["x"], ["h"]),
                    helper.make_node("Min", ["h" if other == [1, 8] else "c", "fill"], ["m"]),
                    helper.make_node("Add", ["m", "x"], ["y"])],
                   [tensor("x", [1, 8])], [tensor("y", [1, 8])],
                   {"fill": np.full((1, 8), 0.5, np.float32), "c": np.full(other, 0.25, np.float32)})
    res = dynify(m, ["x:1=seq"])
    assert res.verified and any(r["rule"] == "fill" for r in res.rewrites)
    assert any(n.op_type == "Expand" for n in res.model.graph.node) == (other == [1, 1])
    x = rng.standard_normal((1, 5)).astype(np.float32)
    want = np.minimum(np.maximum(x, 0) if other == [1, 8] else 0.25, 0.5) + x
    np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-6)


def test_a_meshgrid_scatter_at_batch_1_gets_its_batch_index_back(rng):
    """``mask[b, h, i, j] = m[b, j]`` traced at batch 1 (OPT's opset-14 mask): the index components are
    folded meshgrid aranges, the batch one to a single 0, and the data is ``expand(1, 1, 4, 4)``. The scatter
    covers the whole data, so the data follows the grid's batch and the batch component becomes arange(batch)."""
    grid = np.array([1, 1, 4, 4], np.int64)
    comps = [np.zeros((1, 1, 1, 1), np.int64), np.zeros((1, 1, 1), np.int64),
             np.arange(4, dtype=np.int64).reshape(4, 1), np.arange(4, dtype=np.int64)]
    nodes = [helper.make_node("Reshape", ["m", "t4"], ["m4"]),
             helper.make_node("Expand", ["m4", "grid"], ["upd"]),
             helper.make_node("Expand", ["zeros", "grid"], ["data"])]
    inits = {"t4": np.array([1, 1, 1, 4], np.int64), "grid": grid, "last": np.array([-1], np.int64),
             "zeros": np.zeros((1, 1, 4, 4), np.float32)}
    for k, c in enumerate(comps):
        inits[f"c{k}"] = c
        nodes += [helper.make_node("Expand", [f"c{k}", "grid"], [f"e{k}"]),
                  helper.make_node("Unsqueeze", [f"e{k}", "last"], [f"u{k}"])]
    nodes += [helper.make_node("Concat", [f"u{k}" for k in range(4)], ["idx"], axis=-1),
              helper.make_node("ScatterND", ["data", "idx", "upd"], ["y"])]
    m = make_model(nodes, [tensor("m", [1, 4])], [tensor("y", [1, 1, 4, 4])], inits)
    res = dynify(m, ["m:0=batch"])
    assert res.verified
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"m": x})[0], np.broadcast_to(x[:, None, None, :], (3, 1, 4, 4)))


def test_a_reshape_chain_back_to_its_start_shape_is_dropped(rng):
    """``x.view(-1).view(x.shape)``: the readers read ``x``; the chain and its ``Shape`` are pruned."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Reshape", ["f", "s"], ["v"]), helper.make_node("Relu", ["v"], ["y"])]
    m = make_model(nodes, [tensor("x", [1, 4, 8])], [tensor("y", [1, 4, 8])], {"flat": np.array([-1], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert res.verified and [n.op_type for n in res.model.graph.node] == ["Relu"]
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], np.maximum(x, 0))


def test_a_reshape_chain_to_another_shape_becomes_one_reshape_with_a_constant_target(rng):
    """``x.view(-1).view(B, 4)`` with x [B, 4, 1] and B read from ``x``: one Reshape of ``x`` to ``[0, 4]``."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"]), helper.make_node("Concat", ["b", "four"], ["t"], axis=0),
             helper.make_node("Reshape", ["f", "t"], ["v"]), helper.make_node("Relu", ["v"], ["y"])]
    m = make_model(nodes, [tensor("x", [1, 4, 1])], [tensor("y", [1, 4])],
                   {"flat": np.array([-1], np.int64), "zero": np.array([0], np.int64), "four": np.array([4], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert res.verified and [n.op_type for n in res.model.graph.node] == ["Reshape", "Relu"]
    reshape = res.model.graph.node[0]
    target = next(t for t in res.model.graph.initializer if t.name == reshape.input[1])
    assert reshape.input[0] == "x" and onnx.numpy_helper.to_array(target).tolist() == [0, 4]
    x = rng.standard_normal((3, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], np.maximum(x[..., 0], 0))



def test_a_space_to_depth_traced_at_8x8_is_refused():
    """``x.view(b, c, h/4, 4, w/4, 4)`` traced at 8x8 gives the target ``[1, 2, 2, 4, 2, 4]``: whether 8 splits
    as ``[h/4, 4]`` or ``[2, h/2]`` no shape tells (at multiples of 2 only the second divides exactly, and it
    is the wrong one), so the request is refused, not answered by the smallest restriction that fits."""
    m = make_model([helper.make_node("Reshape", ["x", "blocks"], ["r"]),
                    helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 5, 1, 2, 4]),
                    helper.make_node("Reshape", ["t", "depth"], ["y"])],
                   [tensor("x", [1, 2, 8, 8])], [tensor("y", [1, 32, 2, 2])],
                   {"blocks": np.array([1, 2, 2, 4, 2, 4], np.int64), "depth": np.array([1, 32, 2, 2], np.int64)})
    with pytest.raises(RefusedError, match=r"cannot tell how height splits into \[2, 4\]"):
        dynify(m, ["x:0=batch", "x:2=height", "x:3=width"])


def test_a_folded_repeat_count_takes_the_batch_a_head_merge_needs(rng):
    """WavLM's relative-position bias: ``bias[None].repeat(b, 1, 1, 1).view(b * heads, s, s)`` traced at batch 1,
    times a gate ``[b * heads, s, 1]`` from the input. The batch belongs to the repeat count (a 1), not to the
    heads axis of the bias table the 4 is read from."""
    table = rng.standard_normal((4, 3, 3)).astype(np.float32)
    m = make_model([helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                    helper.make_node("Reshape", ["xt", "gate_shape"], ["gate"]),
                    helper.make_node("Unsqueeze", ["table", "zero"], ["u"]),
                    helper.make_node("Tile", ["u", "reps"], ["t"]),
                    helper.make_node("Reshape", ["t", "merged"], ["bias"]),
                    helper.make_node("Mul", ["gate", "bias"], ["y"])],
                   [tensor("x", [1, 3, 4])], [tensor("y", [4, 3, 3])],
                   {"table": table, "gate_shape": np.array([4, 3, 1], np.int64), "zero": np.array([0], np.int64),
                    "reps": np.array([1, 1, 1, 1], np.int64), "merged": np.array([4, 3, 3], np.int64)})
    res = dynify(m, ["x:0=batch"])
    assert res.verified and res.outputs["y"][1:] == [3, 3]
    x = rng.standard_normal((3, 3, 4)).astype(np.float32)
    want = x.transpose(0, 2, 1).reshape(12, 3, 1) * np.tile(table[None], (3, 1, 1, 1)).reshape(12, 3, 3)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-6)


def test_a_refusal_names_the_conflict_when_a_fill_along_strided_sizes_is_rebuildable():
    """A fill constant over a strided conv's sizes is rebuilt from the tensor that carries them, so the
    refusal names the real conflict (a baked prefix slice of height), not the fill."""
    w = np.ones((2, 3, 3, 3), np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
                    helper.make_node("Add", ["c", "fill"], ["y"]),
                    helper.make_node("Slice", ["x", "s", "e", "ax"], ["z"])],
                   [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 2, 4, 4]), tensor("z", [1, 3, 3, 8])],
                   {"w": w, "fill": np.full((1, 2, 4, 4), 0.5, np.float32), "s": np.array([0], np.int64),
                    "e": np.array([3], np.int64), "ax": np.array([2], np.int64)})
    with pytest.raises(RefusedError, match=r"slice \[0:3:1\] of axis 2, which is height, is baked"):
        dynify(m, ["x:0=batch", "x:2=height", "x:3=width"])


def test_a_tile_by_one_passes_a_binding_to_the_repeat_count_behind_it(rng):
    """``c.repeat(1, h, 1).repeat(1, 1, 1) + x`` traced at h 4 (XCiT's position grid, then its batch repeat):
    the second Tile repeats nothing, so ``h`` binds the first one's count, not the second's."""
    c = rng.standard_normal((1, 1, 3)).astype(np.float32)
    m = make_model([helper.make_node("Tile", ["c", "r1"], ["t1"]), helper.make_node("Tile", ["t1", "r2"], ["t2"]),
                    helper.make_node("Add", ["x", "t2"], ["y"])],
                   [tensor("x", [1, 4, 3])], [tensor("y", [1, 4, 3])],
                   {"c": c, "r1": np.array([1, 4, 1], np.int64), "r2": np.array([1, 1, 1], np.int64)})
    res = dynify(m, ["x:1=h"])
    assert res.verified
    x = rng.standard_normal((1, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x + np.tile(c, (1, 7, 1)), rtol=1e-6)
