"""Property: on a random static graph, dynify either refuses with a reason or writes a model that passes the
full onnx.checker and matches the graph built at two other sizes; a model that does not match must be
caught by verification (never silently wrong).

``make test`` runs a bounded, derandomized campaign; ``make fuzz`` a long one (``FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphgen import OPS, build, feeds
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from winml_dynify import DynifyError, dynify
from winml_dynify.rewrite import SymbolRange

AXES = ["x:0=batch", "x:1=length", "ids:0=batch", "ids:1=length"]
BATCHES = (2, 3, 5)
LENGTHS = (3, 5, 7, 12)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))


def _run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def _inside(r: SymbolRange, v: int) -> bool:
    return v >= r.min and (r.max is None or v <= r.max) and v % r.multiple == 0


def _sizes(ranges: dict[str, SymbolRange], b0: int, l0: int) -> list[tuple[int, int]]:
    """Two (batch, length) pairs other than the exported one, neither size 1, inside the symbol ranges."""
    bs = [b for b in BATCHES if b != b0 and _inside(ranges["batch"], b)]
    ls = [v for v in LENGTHS if v != l0 and _inside(ranges["length"], v)]
    return [(bs[k % len(bs)], ls[k % len(ls)]) for k in range(2)] if bs and ls else []


def _mismatch(dyn: onnx.ModelProto, program: list[str], seed: int, b: int, length: int) -> str:
    inputs = feeds(b, length, seed + b * 100 + length)
    want = _run(build(program, seed, b, length), inputs)
    try:
        got = _run(dyn, inputs)
    except Exception as e:  # onnxruntime raises many types
        return f"onnxruntime raised at batch={b}, length={length}: {str(e).splitlines()[0][:200]}"
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape or not np.allclose(g, w, rtol=1e-4, atol=1e-5):
            return f"outputs differ at batch={b}, length={length}"
    return ""


def outcome(program: list[str], seed: int, b0: int, l0: int) -> str:
    """``refused``, ``written``, ``caught`` (wrong without checks, refused by verification) or ``narrow``
    (no size to compare inside the ranges); raises AssertionError on a property violation."""
    static = build(program, seed, b0, l0)
    try:
        res = dynify(static, AXES, verify=False)
    except DynifyError as e:
        assert str(e).strip(), "a refusal without a reason"
        return "refused"
    onnx.checker.check_model(res.model, full_check=True)
    assert [d.dim_param for d in res.model.graph.input[0].type.tensor_type.shape.dim][:2] == ["batch", "length"]
    sizes = _sizes(res.ranges, b0, l0)
    if not sizes:
        return "narrow"
    wrong = next((m for b, v in sizes if (m := _mismatch(res.model, program, seed, b, v))), "")
    if not wrong:
        return "written"
    try:
        checked = dynify(static, AXES, shapes={"batch": [b for b, _ in sizes], "length": [v for _, v in sizes]})
    except DynifyError:
        return "caught"
    assert not checked.verified, f"silently wrong: {wrong} ({program}, seed {seed}, exported {b0}x{l0})"
    return "caught"


programs = st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=5)


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=programs, seed=st.integers(0, 2**16), b0=st.sampled_from([1, 2, 3]), l0=st.sampled_from([4, 6, 8]))
def test_random_graphs_are_refused_or_right(program, seed, b0, l0):
    event(outcome(program, seed, b0, l0))  # counts shown by pytest --hypothesis-show-statistics


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_alone_at_a_length_above_one(op):
    """Every generator op on its own, exported at batch 2 x length 6: written right, or refused."""
    assert outcome([op], 7, 2, 6) in ("written", "refused", "caught")
