"""rules/flat_gathers: a Gather of a flattened tensor at its own row-major positions is the tensor."""

from __future__ import annotations

import numpy as np
from conftest import mask_gather_model, run

from winml_dynify import dynify
from winml_dynify.dims import N_POINTS
from winml_dynify.rules.flat_gathers import _row_major


def test_a_gather_of_a_flattened_mask_at_its_own_positions_becomes_the_mask(rng):
    res = dynify(mask_gather_model(np.arange(16, dtype=np.int64)), ["mask:0=batch", "mask:1=seq"])
    assert res.verified and any(r["rule"] == "flat-gather" for r in res.rewrites)
    assert [n.op_type for n in res.model.graph.node] == ["Unsqueeze"]  # the Gather's Reshape reader too
    mask = rng.integers(0, 2, (3, 5)).astype(np.int64)
    np.testing.assert_array_equal(run(res.model, {"mask": mask})[0], mask[:, None, None, :])


def test_a_gather_at_other_positions_stays_a_gather(rng):
    """Reversed columns: an affine index, but not the row-major position of each entry."""
    res = dynify(mask_gather_model(np.arange(16, dtype=np.int64)[::-1].copy()), ["mask:0=batch"])
    assert res.verified and not any(r["rule"] == "flat-gather" for r in res.rewrites)
    assert "Gather" in {n.op_type for n in res.model.graph.node}
    mask = rng.integers(0, 2, (3, 16)).astype(np.int64)
    np.testing.assert_array_equal(run(res.model, {"mask": mask})[0], mask[:, None, None, ::-1])


def test_row_major_positions_need_the_strides_in_order():
    b, s = tuple(range(1, N_POINTS + 1)), tuple(range(16, 16 + 2 * N_POINTS, 2))
    one, zero = (1,) * N_POINTS, (0,) * N_POINTS
    assert _row_major([b, s], [b, one, s], (zero, [s, zero, one]))
    assert not _row_major([b, s], [b, one, s], (zero, [one, zero, s]))  # column-major
    assert not _row_major([b, s], [b, one, s], (one, [s, zero, one]))  # shifted by one
    assert not _row_major([s, b], [b, one, s], (zero, [s, zero, one]))  # another tensor's order


def _row_pick_model(argmax: bool) -> object:
    """CLIP's end-of-text pooling traced at batch 1: ``flatten(h)[arange(b) * seq + ids.argmax(-1)]`` with
    the batch arange folded to ``[0]``; without ``argmax`` the pick is a plain integer input."""
    from conftest import make_model, tensor
    from onnx import TensorProto, helper

    pick = [helper.make_node("ArgMax", ["ids"], ["p"], axis=-1, keepdims=0)] if argmax else \
        [helper.make_node("ReduceMax", ["ids"], ["p"], axes=[1], keepdims=0)]
    nodes = [helper.make_node("Flatten", ["h"], ["flat"], axis=2), *pick,
             helper.make_node("Shape", ["ids"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["seq"]),
             helper.make_node("Mul", ["zero", "seq"], ["off"]),
             helper.make_node("Add", ["p", "off"], ["idx"]),
             helper.make_node("Gather", ["flat", "idx"], ["y"])]
    return make_model(nodes, [tensor("h", [1, 5, 3]), tensor("ids", [1, 5], TensorProto.INT64)],
                      [tensor("y", [1, 3])], {"one": np.array(1, np.int64), "zero": np.array([0], np.int64)})


def test_a_gather_at_each_rows_argmax_becomes_a_gather_nd(rng):
    res = dynify(_row_pick_model(argmax=True), ["h:0=batch", "ids:0=batch"])
    assert res.verified and any(r["rule"] == "flat-gather" for r in res.rewrites)
    ops = [n.op_type for n in res.model.graph.node]
    assert "GatherND" in ops and not {"Flatten", "Range", "Gather"} & set(ops)
    h = rng.standard_normal((4, 5, 3)).astype(np.float32)
    ids = rng.integers(0, 50, (4, 5)).astype(np.int64)
    np.testing.assert_array_equal(run(res.model, {"h": h, "ids": ids})[0], h[np.arange(4), ids.argmax(-1)])


def test_a_pick_not_bounded_by_the_row_stays_a_gather():
    """A ReduceMax of the ids may exceed the row: the flat index then reads another row, which a GatherND
    would not."""
    res = dynify(_row_pick_model(argmax=False), ["h:0=batch", "ids:0=batch"], verify=False)
    assert "GatherND" not in {n.op_type for n in res.model.graph.node}
