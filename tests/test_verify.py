"""Verification: each oracle catches a deliberately broken rewrite; a fixed-back model round-trips."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, run
from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

import winml_dynify.api as api
import winml_dynify.rules.constants as constants
import winml_dynify.rules.offsets as offsets
import winml_dynify.rules.shape_inputs as shape_inputs
from winml_dynify import RefusedError, dynify
from winml_dynify.verify import Verifier

BERT = FIXTURES / "bert_tiny" / "s0_batch1_seq16.onnx"
AXES = [f"{n}:{a}={s}" for n in ("input_ids", "attention_mask", "token_type_ids")
        for a, s in ((0, "batch"), (1, "seq"))]


def statuses(res, oracle: str) -> set[str]:
    return {c.status for c in res.report.checks if c.oracle == oracle}


def test_round_trip_fixing_symbols_back_gives_the_original_outputs():
    res = dynify(BERT, AXES)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(res.model)
    make_dim_param_fixed(fixed.graph, "batch", 1)
    make_dim_param_fixed(fixed.graph, "seq", 16)
    fix_output_shapes(fixed)
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, 100, (1, 16)), "attention_mask": np.ones((1, 16), np.int64),
             "token_type_ids": rng.integers(0, 2, (1, 16))}
    for a, b in zip(run(fixed, feeds), run(onnx.load(BERT), feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_per_sample_catches_a_folded_batch_index_left_in_place(monkeypatch):
    """Without the row-offset rule every sample reads row 0's mask: it runs, the numbers are wrong."""
    monkeypatch.setattr(offsets, "offset_bindings", lambda ctx, consts: {})
    res = dynify(FIXTURES / "bert_sdpa" / "s0_batch1_seq16.onnx", AXES)
    assert "failed" in statuses(res, "per-sample")
    assert statuses(res, "original") == {"passed"}  # batch 1 cannot see it


def test_padding_catches_wrong_position_ids(monkeypatch):
    """Position ids (the 2-D arange) rebuilt with a wrong offset: padding (and original) reject it."""
    real = constants._affine

    def shifted(arr, kinds):
        got = real(arr, kinds)
        return got if got is None or arr.ndim != 2 else (got[0] + 1, got[1])

    monkeypatch.setattr(constants, "_affine", shifted)
    res = dynify(BERT, AXES)
    assert "failed" in statuses(res, "padding")
    assert "failed" in statuses(res, "original")


def test_self_check_and_runs_catch_a_reshape_left_static(monkeypatch):
    """The folk recipe's failure: a baked Reshape target left as is."""
    monkeypatch.setitem(shape_inputs.RULES, "Reshape", (1, lambda node, an, need, rz: None))
    with pytest.raises(RefusedError, match=r"still needs|rejects"):
        dynify(BERT, AXES)  # the checks on the result refuse it before any run
    monkeypatch.setattr(api, "_self_check",  # the analysis it returns, without its refusals
                        lambda model, specs, statics, ranges, choices, original, evidence: api.analyse_request(
                            model, specs, statics, {}, choices))
    res = dynify(BERT, AXES)
    moved = [c for c in res.report.checks if c.shape != {"batch": 1, "seq": 16}]
    assert moved and all(c.status == "failed" and c.oracle == "runs" for c in moved)


def test_reference_oracle_catches_a_model_with_other_weights(tmp_path):
    """A reference that disagrees (other weights) fails the reference check while the others pass."""
    other = onnx.load(FIXTURES / "bert_tiny" / "ref_batch3_seq24.onnx")
    for t in other.graph.initializer:
        if t.name.endswith("pooler.dense.bias"):
            arr = onnx.numpy_helper.to_array(t) + 1
            t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
    ref = tmp_path / "ref.onnx"
    onnx.save(other, ref)
    res = dynify(BERT, AXES, references=[str(ref)])
    assert statuses(res, "reference") == {"failed"}
    assert statuses(res, "per-sample") == {"passed"}


def test_verifier_never_reports_its_own_output_as_ground_truth():
    """With the rewritten model passed as 'original', a shape beyond the export is still unverified."""
    res = dynify(BERT, AXES)
    v = Verifier(onnx.load(BERT), res.model, res.axes, res.outputs)
    [check] = v.run([{"batch": 1, "seq": 40}], ["disabled"], []).checks
    assert check.status == "unverified"


def test_padding_oracle_is_not_claimed_when_the_original_depends_on_padding(rng):
    """A model that averages over every position, mask or not: padding changes real outputs, so the
    padding oracle is probed on the original, found not to apply, and shorter sequences are unverified."""
    from conftest import make_model, tensor
    from onnx import TensorProto, helper

    m = make_model([helper.make_node("Gather", ["emb", "ids"], ["x"]),
                    helper.make_node("ReduceMean", ["x"], ["avg"], axes=[1], keepdims=1),
                    helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
                    helper.make_node("Unsqueeze", ["mf", "two"], ["m3"]),
                    helper.make_node("Add", ["x", "avg"], ["s"]),
                    helper.make_node("Mul", ["s", "m3"], ["y"])],
                   [tensor("ids", [1, 16], TensorProto.INT64), tensor("mask", [1, 16], TensorProto.INT64)],
                   [tensor("y", [1, 16, 4])],
                   {"emb": rng.standard_normal((30, 4)).astype(np.float32), "two": np.array([2], np.int64)})
    res = dynify(m, ["ids:0=batch", "ids:1=seq", "mask:0=batch", "mask:1=seq"], shapes={"seq": [7, 11]})
    shorter = [c for c in res.report.checks if c.shape["seq"] < 16]
    assert shorter and all(c.status == "unverified" and "padded content" in c.note for c in shorter)


@pytest.mark.parametrize("axes", [["x:0=batch", "x:1=seq"], ["x:1=seq"]], ids=["batch-seq", "seq"])
def test_a_folded_length_scalar_is_never_passed_on_per_sample_evidence(axes):
    """``h * x.size(1) ** -0.5`` folded to 0.25 at seq 16: per-token outputs look like independent samples
    along seq, but the per-sample oracle runs the original at 16 and cannot see the folded length. Only a
    --reference settles it (here: it shows the model wrong), so without one verification fails."""
    model = FIXTURES / "mean_pool_scale" / "s0_batch1_seq16.onnx"
    res = dynify(model, axes)
    assert not res.verified
    assert any(c.oracle == "scalar" and "folded size" in c.note for c in res.report.checks)
    res = dynify(model, axes, references=[str(FIXTURES / "mean_pool_scale" / "ref_batch1_seq7.onnx")])
    assert any(c.oracle == "reference" and c.status == "failed" for c in res.report.checks)


def test_an_exponent_is_not_taken_for_a_folded_size(rng):
    """GELU's ``x ** 3`` at a length of 9: 3 is sqrt(9), but an exponent is no folded size; a scale of 3
    applied by Mul still is."""
    from conftest import make_model, tensor
    from onnx import helper

    three = np.array(3.0, np.float32)
    for op, inputs in (("Pow", ["x", "three"]), ("Mul", ["x", "three"])):
        m = make_model([helper.make_node(op, inputs, ["y"])], [tensor("x", [1, 9, 4])], [tensor("y", [1, 9, 4])],
                       {"three": three})
        res = dynify(m, ["x:1=seq"])
        flagged = [c for c in res.report.checks if c.oracle == "scalar"]
        assert bool(flagged) == (op == "Mul"), (op, flagged)
