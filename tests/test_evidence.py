"""Splits only a reference export can decide (``[h/4, 4]`` or ``[2, h/2]``), on hand-built graphs.

Each builder makes the static graph a tracer would bake at one size; the graph built at another size is
the independent ground truth there. One reference export decides the split; the others check it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_model, run, tensor
from onnx import helper

from winml_dynify import RefusedError, dynify
from winml_dynify.dims import make_symbols
from winml_dynify.evidence import tensor_shapes
from winml_dynify.realize import Realizer


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def space_to_depth(h: int, w: int) -> onnx.ModelProto:
    """``x.view(1, 2, h/4, 4, w/4, 4).permute(0, 3, 5, 1, 2, 4).reshape(1, 32, h/4, w/4)``."""
    return make_model([helper.make_node("Reshape", ["x", "blocks"], ["r"], name="unfold"),
                       helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 5, 1, 2, 4]),
                       helper.make_node("Reshape", ["t", "depth"], ["y"], name="fold")],
                      [tensor("x", [1, 2, h, w])], [tensor("y", [1, 32, h // 4, w // 4])],
                      {"blocks": _i64(1, 2, h // 4, 4, w // 4, 4), "depth": _i64(1, 32, h // 4, w // 4)})


def area_softmax(h: int, b: int = 1) -> onnx.ModelProto:
    """Tokens split into 4 areas of ``h/4`` (YOLO12's area attention): ``x.view(b * 4, h/4, 4)``, a softmax
    within each area, and back. The 4 is the count of areas here, not a block of 4 tokens."""
    return make_model([helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                       helper.make_node("Reshape", ["xt", "areas"], ["a"], name="areas"),
                       helper.make_node("Softmax", ["a"], ["s"], axis=1),
                       helper.make_node("Reshape", ["s", "back"], ["y"])],
                      [tensor("x", [b, 4, h])], [tensor("y", [b, h, 4])],
                      {"areas": _i64(4 * b, h // 4, 4), "back": _i64(b, h, 4)})


def roll(h: int) -> onnx.ModelProto:
    """``torch.roll(x, -2, 1)`` as exported: ``cat(x[:, 2:], x[:, :2])``; the ``:2`` is a fixed shift."""
    big = np.iinfo(np.int64).max
    return make_model([helper.make_node("Slice", ["x", "two", "end", "one"], ["tail"]),
                       helper.make_node("Slice", ["x", "zero", "two", "one"], ["head"], name="head"),
                       helper.make_node("Concat", ["tail", "head"], ["y"], axis=1)],
                      [tensor("x", [1, h, 3])], [tensor("y", [1, h, 3])],
                      {"two": _i64(2), "end": _i64(big), "one": _i64(1), "zero": _i64(0)})


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, path)
    return str(path)


def test_a_block_split_without_a_reference_is_refused_naming_both_readings():
    with pytest.raises(RefusedError, match=r"node 'unfold'.*\[height/4, 4\] or \[2, height/2\]; give --reference"):
        dynify(space_to_depth(8, 8), ["x:2=height", "x:3=width"])


def test_a_reference_export_decides_the_block_of_a_space_to_depth(tmp_path, rng):
    """Traced at 8x8 (``[2, 4]``, where the smallest restriction that divides picks ``[2, h/2]``); the
    16x16 export shows the 2 growing: ``[h/4, 4]``, right at 12x20 and 24x8 as well."""
    ref = _save(space_to_depth(16, 16), tmp_path / "ref.onnx")
    res = dynify(space_to_depth(8, 8), ["x:2=height", "x:3=width"], references=[ref])
    assert res.verified and res.ranges["height"].multiple == 4
    for h, w in ((12, 20), (24, 8)):
        x = rng.standard_normal((1, 2, h, w)).astype(np.float32)
        np.testing.assert_array_equal(run(res.model, {"x": x})[0], run(space_to_depth(h, w), {"x": x})[0])


def test_a_reference_export_decides_an_outer_count_split(tmp_path, rng):
    """``[4, 4]`` of 16 tokens: the 32-token export keeps the first 4, so it is the count of areas and the
    softmax runs over ``h/4`` tokens, as the 48-token export computes."""
    ref = _save(area_softmax(32), tmp_path / "ref.onnx")
    res = dynify(area_softmax(16), ["x:2=h"], references=[ref])
    assert res.verified
    x = rng.standard_normal((1, 4, 48)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], run(area_softmax(48), {"x": x})[0], rtol=1e-6)


def test_the_batch_stays_in_the_leading_entry_of_an_outer_count_split(tmp_path, rng):
    """``[4, 4]`` of ``b * 16`` tokens at batch 1: the batch joins the count of areas (``b * 4``), so no area
    holds tokens of two samples (the per-sample check passes), as the export at batch 3 computes."""
    ref = _save(area_softmax(32), tmp_path / "ref.onnx")
    res = dynify(area_softmax(16), ["x:0=batch", "x:2=h"], references=[ref])
    assert res.verified
    x = rng.standard_normal((3, 4, 48)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], run(area_softmax(48, 3), {"x": x})[0], rtol=1e-6)


def test_a_reference_that_grows_no_single_entry_is_refused(tmp_path):
    """A "reference" in which both entries of the split changed fits no reading with one growing entry."""
    bad = space_to_depth(16, 16)
    next(t for t in bad.graph.initializer if t.name == "blocks").CopyFrom(
        onnx.numpy_helper.from_array(_i64(1, 2, 1, 16, 4, 4), "blocks"))
    ref = _save(bad, tmp_path / "ref.onnx")
    with pytest.raises(RefusedError, match=r"node 'unfold'.*the reference exports change entries \[2, 3\]"):
        dynify(space_to_depth(8, 8), ["x:2=height", "x:3=width"], references=[ref])


def test_tensor_shapes_reads_every_tensor_of_a_static_export(tmp_path):
    ref = _save(space_to_depth(16, 12), tmp_path / "ref.onnx")
    assert tensor_shapes([ref], space_to_depth(8, 8).graph) == [
        {"x": (1, 2, 16, 12), "r": (1, 2, 4, 4, 3, 4), "t": (1, 4, 4, 2, 4, 3), "y": (1, 32, 4, 3)}]


def test_tensor_shapes_skips_a_reference_with_symbolic_inputs(tmp_path):
    m = space_to_depth(16, 16)
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    assert tensor_shapes([_save(m, tmp_path / "ref.onnx")], space_to_depth(8, 8).graph) == []


def test_the_realizer_divides_a_carried_size_by_a_block():
    """``3*H/2`` where ``H`` (``2*(h/16)**2``, no integer polynomial of ``h``) is carried by input ``c``:
    ``Div(Mul(H, 3), 2)`` at run time; a carrier computed after the node being rewritten is never read."""
    symbols = make_symbols({"h": 32}, {"h": 16})
    carried = tuple(2 * (v // 16) ** 2 for v in symbols["h"].vals)
    rz = Realizer(symbols, {"h": ("x", 2)}, {carried: ("c", 2)})
    out = rz.dim(tuple(3 * v // 2 for v in carried))
    graph = helper.make_graph(rz.nodes, "g", [tensor("x", [1, 1, "h"]), tensor("c", [1, 1, "H"])],
                              [helper.make_tensor_value_info(out, onnx.TensorProto.INT64, [1])], rz.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x, c = np.zeros((1, 1, 48), np.float32), np.zeros((1, 1, 18), np.float32)
    assert run(model, {"x": x, "c": c})[0].tolist() == [27]
    late = Realizer(symbols, {"h": ("x", 2)}, {carried: ("c", 2)})
    late.order, late.site = {"c": 5}, 3
    with pytest.raises(RefusedError, match="no tensor carries it"):
        late.dim(tuple(3 * v // 2 for v in carried))


def test_a_prefix_slice_of_a_moving_axis_is_a_fixed_count_when_a_reference_keeps_it(tmp_path, rng):
    """``x[:, :2]`` of an axis of 8 may be a fixed count or a size folded from the axis: refused alone; the
    12-long export keeps 2, so it is a count (the roll's shift), and the axis must hold it (at least 2)."""
    with pytest.raises(RefusedError, match=r"slice \[0:2:1\] of axis 1, which is h, is baked"):
        dynify(roll(8), ["x:1=h"])
    res = dynify(roll(8), ["x:1=h"], references=[_save(roll(12), tmp_path / "ref.onnx")])
    assert res.verified and res.ranges["h"].min == 2
    x = rng.standard_normal((1, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], np.roll(x, -2, axis=1))


def test_a_reference_whose_tensor_names_mean_other_tensors_decides_nothing(tmp_path):
    """Exporters that number their nodes name other tensors alike at another shape: a reference whose
    ``r`` and ``t`` are swapped (``t`` comes from the Reshape there) is set aside, and the split is refused
    as without a reference."""
    ref = space_to_depth(16, 16)
    swap = {"r": "t", "t": "r"}
    for n in ref.graph.node:
        n.input[:] = [swap.get(i, i) for i in n.input]
        n.output[:] = [swap.get(o, o) for o in n.output]
    path = _save(ref, tmp_path / "ref.onnx")
    assert tensor_shapes([path], space_to_depth(8, 8).graph) == []
    with pytest.raises(RefusedError, match="give --reference"):
        dynify(space_to_depth(8, 8), ["x:2=height", "x:3=width"], references=[path])
