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
