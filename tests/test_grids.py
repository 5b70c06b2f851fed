"""Folded grids (detection heads' anchor points and stride tables) and strided sizes, on hand-built graphs
checked against static builds of the same weights at other sizes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_model, run, tensor
from onnx import helper

from winml_dynify import RefusedError, dynify

STRIDES = (2, 4)


def _anchors(h: int, w: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points (x, y) = (j + 0.5, i + 0.5) of every feature grid, concatenated over the strides, and
    the stride of every point; ``layout`` "cn": points [1, 2, anchors], strides [1, anchors]; "nc":
    points [anchors, 2], strides [anchors, 1]."""
    points, strides = [], []
    for s in STRIDES:
        gh, gw = -(-h // s), -(-w // s)
        yy, xx = np.meshgrid(np.arange(gh) + 0.5, np.arange(gw) + 0.5, indexing="ij")
        points.append(np.stack([xx.reshape(-1), yy.reshape(-1)]))
        strides.append(np.full(gh * gw, float(s)))
    p, st = np.concatenate(points, 1).astype(np.float32), np.concatenate(strides).astype(np.float32)
    return (p[None], st[None]) if layout == "cn" else (p.T.copy(), st[:, None].copy())


def _head(h: int, w: int, k1: np.ndarray, k2: np.ndarray, layout: str, perturb: bool = False) -> onnx.ModelProto:
    """Two strided convs (feature maps at h/2 and h/4), each flattened by a baked Reshape and concatenated
    along the anchor axis; the folded anchor points are added and the folded strides multiplied."""
    points, strides = _anchors(h, w, layout)
    if perturb:
        points.reshape(-1)[7] += 1.0
    f1, f2 = -(-h // 2) * -(-w // 2), -(-h // 4) * -(-w // 4)
    nodes = [helper.make_node("Conv", ["x", "k1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "k2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c1", "t1"], ["r1"]),
             helper.make_node("Reshape", ["c2", "t2"], ["r2"]),
             helper.make_node("Concat", ["r1", "r2"], ["cat"], axis=2)]
    if layout == "nc":
        nodes.append(helper.make_node("Transpose", ["cat"], ["box"], perm=[0, 2, 1]))
        out_shape = [1, f1 + f2, 2]
    else:
        nodes.append(helper.make_node("Identity", ["cat"], ["box"]))
        out_shape = [1, 2, f1 + f2]
    nodes += [helper.make_node("Add", ["box", "points"], ["shifted"], name="add_points"),
              helper.make_node("Mul", ["shifted", "strides"], ["y"], name="mul_strides")]
    return make_model(nodes, [tensor("x", [1, 3, h, w])], [tensor("y", out_shape)],
                      {"k1": k1, "k2": k2, "points": points, "strides": strides,
                       "t1": np.array([1, 2, f1], np.int64), "t2": np.array([1, 2, f2], np.int64)})


@pytest.mark.parametrize("layout", ["cn", "nc"])
def test_anchor_points_and_strides_are_rebuilt_per_feature_grid(rng, layout):
    """Exported at 24 x 40: the [1, 2, 360] anchor points and [1, 360] strides become Ranges over the two
    grids; checked against static builds at 20 x 36 (batch 2) and at odd 13 x 30."""
    k1 = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    k2 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    res = dynify(_head(24, 40, k1, k2, layout), ["x:0=batch", "x:2=height", "x:3=width"])
    assert res.verified
    assert sorted(r["target"] for r in res.rewrites if r["rule"] == "grid") == ["points", "strides"]
    for b, h, w in ((2, 20, 36), (1, 13, 30)):
        x = rng.standard_normal((b, 3, h, w)).astype(np.float32)
        want = np.concatenate([run(_head(h, w, k1, k2, layout), {"x": x[i:i + 1]})[0] for i in range(b)])
        np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_a_grid_constant_with_other_content_is_refused_by_name(rng):
    """One anchor point moved: no longer affine in its grid's indices, so it is refused, naming it."""
    k1 = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    k2 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    with pytest.raises(RefusedError, match="constant 'points'"):
        dynify(_head(24, 40, k1, k2, "cn", perturb=True), ["x:2=height", "x:3=width"])


def _two_branch(h: int, w: int, k1: np.ndarray, k2: np.ndarray, k3: np.ndarray) -> onnx.ModelProto:
    """Low-level features at stride 2, high-level at stride 4 resized to the low-level size (a baked
    ``sizes``) through a 1x1 conv and added; the sum resized back to the input size (baked too)."""
    lh, lw = -(-h // 2), -(-w // 2)
    return make_model([helper.make_node("Conv", ["x", "k1"], ["low"], strides=[2, 2], pads=[1, 1, 1, 1]),
                       helper.make_node("Conv", ["low", "k2"], ["high"], strides=[2, 2], pads=[1, 1, 1, 1]),
                       helper.make_node("Resize", ["high", "", "", "inner"], ["up"], mode="linear"),
                       helper.make_node("Conv", ["up", "k3"], ["cls"]),
                       helper.make_node("Add", ["low", "cls"], ["s"]),
                       helper.make_node("Resize", ["s", "", "", "outer"], ["y"], mode="linear")],
                      [tensor("x", [1, 3, h, w])], [tensor("y", [1, 2, h, w])],
                      {"k1": k1, "k2": k2, "k3": k3, "inner": np.array([1, 2, lh, lw], np.int64),
                       "outer": np.array([1, 2, h, w], np.int64)})


def test_a_branch_resized_to_the_size_of_the_branch_it_is_added_to(rng):
    """Exported at 24 x 40: the inner baked [12, 20] follows the low-level branch (through the 1x1 conv
    and the Add), the outer [24, 40] the input; checked against static builds at 20 x 36 and odd 13 x 30."""
    k1 = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    k2 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    k3 = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    res = dynify(_two_branch(24, 40, k1, k2, k3), ["x:0=batch", "x:2=height", "x:3=width"])
    assert res.outputs["y"] == ["batch", 2, "height", "width"]
    assert [r["rule"] for r in res.rewrites] == ["resize-shape", "resize-shape"]
    for b, h, w in ((2, 20, 36), (1, 13, 30)):
        x = rng.standard_normal((b, 3, h, w)).astype(np.float32)
        want = np.concatenate([run(_two_branch(h, w, k1, k2, k3), {"x": x[i:i + 1]})[0] for i in range(b)])
        np.testing.assert_allclose(run(res.model, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
