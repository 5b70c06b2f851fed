"""The verification units on small graphs: check inputs, tolerances, shapes, timings."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import make_model, tensor
from onnx import TensorProto, helper

from winml_dynify import dynify
from winml_dynify.rewrite import SymbolRange
from winml_dynify.verify.feeds import implied_ranges, inputs, settle_float_domain
from winml_dynify.verify.shapes import check_shapes
from winml_dynify.verify.tolerance import Tol, diff, noise, precision, tolerances


def _one_hot_bytes(rng) -> onnx.ModelProto:
    """Bytes one-hot encoded (depth 256, no vocabulary Gather), projected and layer-normalised."""
    return make_model([helper.make_node("OneHot", ["ids", "depth", "onoff"], ["oh"], axis=-1),
                       helper.make_node("MatMul", ["oh", "w"], ["h"]),
                       helper.make_node("LayerNormalization", ["h", "g", "b"], ["y"], axis=-1)],
                      [tensor("ids", [1, 16], TensorProto.INT64)], [tensor("y", [1, 16, 32])],
                      {"depth": np.array(256, np.int64), "onoff": np.array([0, 1], np.float32),
                       "w": rng.standard_normal((256, 32)).astype(np.float32),
                       "g": np.ones(32, np.float32), "b": np.zeros(32, np.float32)})


def test_integer_inputs_take_the_range_their_uses_imply(rng):
    m = make_model([helper.make_node("Cast", ["a"], ["a2"], to=TensorProto.INT64),
                    helper.make_node("Gather", ["table", "a2"], ["ga"]),
                    helper.make_node("OneHot", ["b", "depth", "onoff"], ["ob"]),
                    helper.make_node("Equal", ["c", "eos"], ["ec"])],
                   [tensor("a", [2, 5], TensorProto.INT32), tensor("b", [2, 5], TensorProto.INT64),
                    tensor("c", [2, 5], TensorProto.INT64)],
                   [tensor("ga", [2, 5, 3]), tensor("ob", [2, 5, 11]), tensor("ec", [2, 5], TensorProto.BOOL)],
                   {"table": rng.standard_normal((40, 3)).astype(np.float32), "depth": np.array(11, np.int64),
                    "onoff": np.array([0, 1], np.float32), "eos": np.array([7], np.int64)})
    assert implied_ranges(m) == {"a": (0, 40), "b": (0, 11), "c": (7, 9)}
    m.graph.node[-1].input[0] = "a2"  # a table bounds the ids; comparing them with a pad id does not narrow it
    assert implied_ranges(m)["a"] == (0, 40)


def test_one_hot_byte_model_is_verified_with_byte_inputs(rng):
    m = _one_hot_bytes(rng)
    assert {i.name: (i.low, i.high) for i in inputs(m, [])} == {"ids": (0, 256)}
    res = dynify(m, ["ids:0=batch", "ids:1=seq"])
    assert res.verified, [c.note for c in res.report.checks if c.status == "failed"]


def test_float_inputs_are_drawn_inside_the_original_domain(rng):
    """Acos, Log and Sqrt give NaN on most normal draws: a correct rewrite is verified on inputs the
    original accepts, and the report says which distribution was used."""
    m = make_model([helper.make_node("Acos", ["x"], ["a"]), helper.make_node("Log", ["x"], ["b"]),
                    helper.make_node("Sqrt", ["x"], ["c"])],
                   [tensor("x", [3, 4])], [tensor("a", [3, 4]), tensor("b", [3, 4]), tensor("c", [3, 4])])
    res = dynify(m, ["x:0=batch"])
    assert res.verified
    assert res.report.float_inputs == "uniform(0.1, 0.9)"
    assert {c.oracle for c in res.report.checks} >= {"original", "per-sample"}


def test_float_domain_keeps_the_widest_distribution_that_works():
    specs = inputs(make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [2, 3])], [tensor("y", [2, 3])]),
                   [])
    assert settle_float_domain(specs, {}, lambda feeds: [feeds["x"]], 0) == "normal"
    with np.errstate(invalid="ignore"):
        got = settle_float_domain(specs, {}, lambda feeds: [np.log(np.abs(feeds["x"]) - 0.3)], 0)
    assert got == "uniform(0.4, 0.6)"


def test_precision_is_read_from_the_graph(rng):
    m = make_model([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                    helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)],
                   [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    assert precision(m) == "float16"
    m.graph.node[0].attribute[0].i = TensorProto.BFLOAT16
    assert precision(m) == "bfloat16"
    q = make_model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
                    helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
                   [tensor("x", [2, 3])], [tensor("y", [2, 3])], {"s": np.array(0.1, np.float32)})
    assert precision(q) == "int8"
    assert precision(make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [2])], [tensor("y", [2])])) \
        == "float32"


def test_tolerance_scales_with_precision_and_the_original_noise():
    y = np.array([[3.0, -5.0]], np.float32)
    t32 = tolerances("float32", ["y"], [y], [0.0])["y"]
    t16 = tolerances("float16", ["y"], [y], [0.0])["y"]
    assert (t32.rtol, t32.atol) == (1e-3, 1e-4)
    assert t16.rtol == 1e-2 and np.isclose(t16.atol, 5e-2)  # scaled by the output's magnitude
    noisy = tolerances("float32", ["y"], [y], [1e-3])["y"]
    assert np.isclose(noisy.atol, 4e-3) and "noise" in noisy.why
    assert np.isclose(noise([y], [y + np.float32(1e-3)])[0], 1e-3, rtol=1e-2)
    # a 3.9e-3 fp16 difference on values near 1 fails fp32 tolerance, passes fp16's
    a, b = np.array([1.0039], np.float32), np.array([1.0], np.float32)
    assert not diff(a, b, t32)[0]
    assert diff(a, b, tolerances("float16", ["y"], [b], [0.0])["y"])[0]
    assert not diff(np.array([1, 2]), np.array([1, 3]), Tol(1.0, 1.0))[0]  # integers compare exactly


def test_float32_tolerance_allows_rounding_at_the_output_magnitude_only():
    """Random-weight Keras ResNet50V2 pools to values up to 4e4: an entry near 0 differs by 0.03 between a
    batched and a per-sample run (summation order). That is float32 rounding at that magnitude; an error
    of the size of the values is still caught."""
    y = np.array([[4.0e4, 0.5, -3.0]], np.float32)
    t = tolerances("float32", ["y"], [y], [0.0])["y"]
    assert np.isclose(t.atol, 16 * np.finfo(np.float32).eps * 4.0e4) and "magnitude" in t.why
    assert diff(y + np.array([[0.0, 0.03, 0.0]], np.float32), y, t)[0]
    assert not diff(y + np.array([[0.0, 0.5, 0.0]], np.float32), y, t)[0]
    small = tolerances("float32", ["y"], [np.array([3.0, -5.0], np.float32)], [0.0])["y"]
    assert small.atol == 1e-4 and small.why == "float32 compute"


def test_check_shapes_stay_inside_range_and_multiple():
    ranges = {"h": SymbolRange("h", 32, 16, 64, multiple=16), "batch": SymbolRange("batch", 1, 1, None, 1)}
    for shape in check_shapes(ranges, {"batch": "batch", "h": "other"}):
        assert 16 <= shape["h"] <= 64 and shape["h"] % 16 == 0


def test_the_largest_batch_moves_into_the_joint_shape_only_where_an_oracle_covers_it():
    ranges = {"batch": SymbolRange("batch", 1, 1, None), "seq": SymbolRange("seq", 16, 1, 64)}
    shapes = check_shapes(ranges, {"batch": "batch", "seq": "seq"})
    assert {"batch": 3, "seq": 16} not in shapes and {"batch": 3, "seq": 7} in shapes
    assert {"batch": 2, "seq": 16} in shapes
    shapes = check_shapes(ranges, {"batch": "batch", "seq": "other"})  # no oracle for seq: keep (3, 16)
    assert {"batch": 3, "seq": 16} in shapes and {"batch": 2, "seq": 32} in shapes


def test_report_has_per_phase_timings(rng):
    res = dynify(_one_hot_bytes(rng), ["ids:0=batch"])
    timings = res.report.as_dict()["timings"]
    phases = {"setup", "role probes", "ground truth", "checks", "references"}
    assert set(timings) == phases | {"of which session builds"}
    assert all(v >= 0 for v in timings.values())
    assert 0 < timings["of which session builds"] <= sum(timings[p] for p in phases)
    memory = res.report.as_dict()["memory"]
    assert memory["models_held_at_once"] == 1 and memory["peak_rss_mb"] > 0
    # the weights of the rewritten model as it is held: the 256x32 projection, the norm's 2x32 (+ headers)
    held = memory["weights"]["rewritten"]
    assert held["external_bytes"] == 0 and 0 <= held["inline_bytes"] - 4 * (256 * 32 + 64) < 1024


def test_float16_tolerance_still_catches_a_wrong_rewrite(monkeypatch):
    """The float16 BERT passes as it is; with position ids rebuilt one off, its checks fail."""
    from conftest import FIXTURES

    import winml_dynify.rules.constants as constants

    model = FIXTURES / "derived" / "bert_tiny_fp16" / "s0_batch1_seq16.onnx"
    axes = [f"{n}:{a}={s}" for n in ("input_ids", "attention_mask", "token_type_ids")
            for a, s in ((0, "batch"), (1, "seq"))]
    assert dynify(model, axes).verified
    real = constants._affine

    def shifted(arr, kinds):
        got = real(arr, kinds)
        return got if got is None or arr.ndim != 2 else (got[0] + 1, got[1])

    monkeypatch.setattr(constants, "_affine", shifted)
    res = dynify(model, axes)
    assert {c.status for c in res.report.checks if c.oracle in ("original", "padding")} >= {"failed"}


def test_onnxruntime_holds_one_model_at_a_time(rng, monkeypatch):
    """The original's ground truth is computed first and its session released; then the rewritten model
    runs level by level: no two check sessions are ever alive together, and the original never runs at
    level *all* during the checks (its outputs with optimisations disabled serve every level)."""
    import weakref

    import winml_dynify.verify.oracles as oracles

    live: set[int] = set()
    most, built = 0, []
    real = oracles._session

    def tracked(model_bytes, level, provider, data_dir=None):
        nonlocal most
        sess = real(model_bytes, level, provider, data_dir)
        key = id(sess)
        live.add(key)
        most = max(most, len(live))
        built.append(level)
        weakref.finalize(sess, live.discard, key)
        return sess

    monkeypatch.setattr(oracles, "_session", tracked)
    res = dynify(_one_hot_bytes(rng), ["ids:0=batch", "ids:1=seq"])
    assert res.verified and len(res.report.checks) > 4
    assert most == 1
    # original: disabled (role probes, truth) and all (its noise, once); rewritten: one per level
    assert sorted(built) == ["all", "all", "disabled", "disabled"]


def test_the_original_runs_once_per_distinct_sample_group(monkeypatch):
    """BERT at (batch, seq) = (1,16), (2,16), (1,7), (1,13), (1,1), (1,64), (3,7): each sample is drawn on its
    own, so the larger batches share their first samples with the smaller ones, and the ground truth runs
    the original on 7 distinct inputs (10 sample groups in all), each once."""
    from conftest import FIXTURES

    import winml_dynify.verify.oracles as oracles

    ran: list[bytes] = []
    real = oracles.Verifier._run_original

    def counted(self, feeds, level="disabled"):
        ran.append(b"".join(feeds[k].tobytes() for k in sorted(feeds)))
        return real(self, feeds, level)

    monkeypatch.setattr(oracles.Verifier, "_run_original", counted)
    real_truth = oracles.Verifier._ground_truth
    truth_runs: list[int] = []

    def truth(self, values, feeds):
        before = len(ran)
        out = real_truth(self, values, feeds)
        truth_runs.append(len(ran) - before)
        return out

    monkeypatch.setattr(oracles.Verifier, "_ground_truth", truth)
    axes = [f"{n}:{a}={s}" for n in ("input_ids", "attention_mask", "token_type_ids")
            for a, s in ((0, "batch"), (1, "seq"))]
    res = dynify(FIXTURES / "bert_tiny" / "s0_batch1_seq16.onnx", axes)
    assert res.verified
    # (2,16) and (3,7) reuse sample 0 of (1,16) and (1,7); (1,64) has no oracle
    assert truth_runs == [1, 1, 1, 1, 1, 0, 2]
    batched = next(c for c in res.report.checks if c.shape == {"batch": 3, "seq": 7})
    assert batched.status == "passed"
