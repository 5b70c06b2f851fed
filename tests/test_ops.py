"""Op handlers per family against onnxruntime: the shapes the analysis gives at its sample points equal
the shapes onnxruntime produces when the graph is run at those sizes. docs/OPS.md is complete."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from winml_dynify import coverage
from winml_dynify.analysis import analyse
from winml_dynify.dims import const, make_symbols
from winml_dynify.ops_ort import MS, NCHWC, nchwc_block

F, I64, U8, I32, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.UINT8, TensorProto.INT32, TensorProto.BOOL
DOCS = Path(__file__).resolve().parents[1] / "docs" / "OPS.md"


@dataclass
class Case:
    """Graph nodes; inputs as (name, shape with symbol names, type); initializers; symbol values at export."""

    nodes: list[onnx.NodeProto]
    inputs: list[tuple[str, list, int]]
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    statics: dict[str, int] = field(default_factory=lambda: {"b": 2, "s": 6})
    outputs: list[str] | None = None  # default: every output of the last node
    feeds: dict[str, object] = field(default_factory=dict)  # input name -> fn(shape) for special values
    multiples: dict[str, int] = field(default_factory=dict)  # symbols sampled at multiples only


def _model(case: Case) -> onnx.ModelProto:
    outs = case.outputs or [o for o in case.nodes[-1].output if o]
    vis = [helper.make_tensor_value_info(n, t, shp)
           for n, shp, t in case.inputs]
    g = helper.make_graph(case.nodes, "t", vis, [helper.make_empty_tensor_value_info(o) for o in outs],
                          [numpy_helper.from_array(v, k) for k, v in case.inits.items()])
    return helper.make_model(g, ir_version=8, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1),
                                                           helper.make_opsetid(NCHWC, 1)])


def assert_matches_onnxruntime(case: Case, points=(0, 1, 2)) -> None:
    m = _model(case)
    symbols = make_symbols(case.statics, case.multiples)
    dims = {n: [symbols[d].vals if isinstance(d, str) else const(d) for d in shp] for n, shp, _ in case.inputs}
    an = analyse(m, dims, symbols)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in m.graph.output]
    rng = np.random.default_rng(0)
    for p in points:
        feeds = {}
        for n, shp, t in case.inputs:
            shape = [symbols[d].vals[p] if isinstance(d, str) else d for d in shp]
            if n in case.feeds:
                feeds[n] = case.feeds[n](shape)
            elif t == F:
                feeds[n] = rng.standard_normal(shape).astype(np.float32)
            else:
                feeds[n] = np.zeros(shape, helper.tensor_dtype_to_np_dtype(t))
        got = sess.run(names, feeds)
        for name, arr in zip(names, got, strict=True):
            info = an.infos.get(name)
            assert info is not None and info.shape is not None, f"{name}: unknown to the analysis"
            assert [d.vals[p] for d in info.shape] == list(arr.shape), (name, p)
    assert not an.conflicts, an.conflicts


def n(op, ins, outs, domain="", **kw):
    return helper.make_node(op, ins, outs, domain=domain, **kw)


def w(*shape, dtype=np.float32, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(dtype)


X3 = [("x", ["b", "s", 8], F)]
HW = {"b": 2, "h": 8, "w": 12}
IMG = [("x", ["b", 3, "h", "w"], F)]


def _u8(*shape):
    return np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)


SC, ZP = np.array(0.05, np.float32), np.array(128, np.uint8)
QUANT = {"sc": SC, "zp": ZP}
CONTRIB = {
    "SimplifiedLayerNormalization": Case(
        [n("SimplifiedLayerNormalization", ["x", "g"], ["y", "r"], axis=-1)], X3, {"g": w(8)}),
    "LayerNormalization": Case([n("LayerNormalization", ["x", "g", "bb"], ["y", "m", "r"], axis=-1)], X3,
                               {"g": w(8), "bb": w(8)}),
    "SkipLayerNormalization": Case(
        [n("SkipLayerNormalization", ["x", "x2", "g", "bb"], ["y", "m", "v", "sum"], MS)],
        [*X3, ("x2", ["b", "s", 8], F)], {"g": w(8), "bb": w(8)}),
    "SkipSimplifiedLayerNormalization": Case(
        [n("SkipSimplifiedLayerNormalization", ["x", "x2", "g"], ["y", "", "", "sum"], MS)],
        [*X3, ("x2", ["b", "s", 8], F)], {"g": w(8)}),
    "gelu-family": Case([n("Gelu", ["x"], ["a"], MS), n("FastGelu", ["a", "bias"], ["c"], MS),
                         n("BiasGelu", ["c", "bias"], ["d"], MS), n("QuickGelu", ["d"], ["e"], MS, alpha=1.7),
                         n("Add", ["e", "x"], ["f"])], X3, {"bias": w(8)}),
    "EmbedLayerNormalization": Case(
        [n("EmbedLayerNormalization", ["ids", "seg", "word", "pos", "segw", "g", "bb", "mask"],
           ["y", "mi", "sum"], MS, epsilon=1e-5)],
        [("ids", ["b", "s"], I32), ("seg", ["b", "s"], I32), ("mask", ["b", "s"], I32)],
        {"word": w(30, 8), "pos": w(64, 8), "segw": w(2, 8), "g": w(8), "bb": w(8)}),
    "Attention": Case([n("Attention", ["x", "wq", "bq"], ["y"], MS, num_heads=2)], X3,
                      {"wq": w(8, 24), "bq": w(24)}),
    "Attention-past": Case([n("Attention", ["x", "wq", "bq", "", "past"], ["y", "present"], MS, num_heads=2,
                              unidirectional=1)],
                           [*X3, ("past", [2, "b", 2, "p", 4], F)], {"wq": w(8, 24), "bq": w(24)},
                           {"b": 2, "s": 6, "p": 5}),
    "MultiHeadAttention": Case(
        [n("MultiHeadAttention", ["x", "k", "v", "", "", "", "pk", "pv"], ["y", "prk", "prv"], MS, num_heads=2)],
        [*X3, ("k", ["b", "s", 8], F), ("v", ["b", "s", 8], F), ("pk", ["b", 2, "p", 4], F),
         ("pv", ["b", 2, "p", 4], F)], statics={"b": 2, "s": 6, "p": 5}),
    "MultiHeadAttention-cross": Case(
        [n("MultiHeadAttention", ["x", "k", "v"], ["y"], MS, num_heads=2)],
        [*X3, ("k", ["b", "l", 8], F), ("v", ["b", "l", 8], F)], statics={"b": 2, "s": 6, "l": 7}),
    "GroupQueryAttention": Case(
        [n("Shape", ["pk"], ["pks"], start=2, end=3), n("Shape", ["x"], ["xs"], start=1, end=2),
         n("Add", ["pks", "xs"], ["tot1"]), n("Cast", ["tot1"], ["tot32"], to=I32),
         n("Squeeze", ["tot32"], ["tot"]),
         n("GroupQueryAttention", ["x", "k", "v", "pk", "pv", "seqlens", "tot"], ["y", "prk", "prv"], MS,
           num_heads=2, kv_num_heads=1)],
        [("x", [1, "s", 16], F), ("k", [1, "s", 8], F), ("v", [1, "s", 8], F), ("pk", [1, 1, "p", 8], F),
         ("pv", [1, 1, "p", 8], F), ("seqlens", [1], I32)], statics={"s": 6, "p": 5},
        feeds={"seqlens": None}),
    "RotaryEmbedding": Case([n("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], MS, num_heads=2)],
                            [*X3, ("pos", ["b", "s"], I64)], {"cos": w(64, 2), "sin": w(64, 2)}),
    "MatMulNBits": Case([n("MatMulNBits", ["x", "qw", "qs"], ["y"], MS, K=8, N=5, bits=4, block_size=16)], X3,
                        {"qw": _u8(5, 1, 8), "qs": w(5, 1)}),
    "DynamicQuantizeMatMul": Case([n("DynamicQuantizeMatMul", ["x", "qb", "bs", "bz"], ["y"], MS)], X3,
                                  {"qb": _u8(8, 5).astype(np.int8), "bs": np.array([0.1], np.float32),
                                   "bz": np.array([0], np.int8)}),
    "MatMulIntegerToFloat": Case(
        [n("MatMulIntegerToFloat", ["q", "qb", "as", "bs", "az", "bz"], ["y"], MS)],
        [("q", ["b", "s", 8], U8)], {"qb": _u8(8, 5), "as": SC, "bs": SC, "az": ZP, "bz": ZP}),
    "QLinear-elementwise": Case(
        [n("QuantizeLinear", ["x", "sc", "zp"], ["q"]),
         n("QLinearAdd", ["q", "sc", "zp", "q", "sc", "zp", "sc", "zp"], ["a"], MS),
         n("QLinearMul", ["a", "sc", "zp", "qc", "sc", "zp", "sc", "zp"], ["m"], MS),
         n("QLinearSigmoid", ["m", "sc", "zp", "sc", "zp"], ["g"], MS),
         n("QLinearLeakyRelu", ["g", "sc", "zp", "sc", "zp"], ["l"], MS, alpha=0.1),
         n("QLinearSoftmax", ["l", "sc", "zp", "sc", "zp"], ["sm"], MS, axis=-1, opset=13),
         n("QLinearConcat", ["sc", "zp", "sm", "sc", "zp", "q", "sc", "zp"], ["cat"], MS, axis=1),
         n("DequantizeLinear", ["cat", "sc", "zp"], ["y"], MS)], X3, {**QUANT, "qc": _u8(8)}),
    "QGemm": Case([n("Flatten", ["x"], ["f"], axis=2), n("QuantizeLinear", ["f", "sc", "zp"], ["q"]),
                   n("Reshape", ["q", "sh"], ["q2"]),
                   n("QGemm", ["q2", "sc", "zp", "qb", "sc", "zp", "", "sc", "zp"], ["y"], MS, transB=1)],
                  X3, {**QUANT, "qb": _u8(5, 8), "sh": np.array([-1, 8], np.int64)}),
    "QAttention": Case(
        [n("QuantizeLinear", ["x", "sc", "zp"], ["q"]),
         n("QAttention", ["q", "qw", "bq", "sc", "sc", "", "zp", "zp"], ["y"], MS, num_heads=2)], X3,
        {**QUANT, "qw": _u8(8, 24), "bq": w(24)}),
    "FusedConv": Case([n("FusedConv", ["x", "cw", "cb"], ["y"], MS, activation="Relu", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[2, 2])], IMG, {"cw": w(4, 3, 3, 3), "cb": w(4)}, HW),
    "QLinear-vision": Case(
        [n("QuantizeLinear", ["x", "sc", "zp"], ["q"]),
         n("QLinearConv", ["q", "sc", "zp", "qw", "sc", "zp", "sc", "zp"], ["c"], kernel_shape=[3, 3],
           strides=[2, 2]),
         n("QLinearAveragePool", ["c", "sc", "zp", "sc", "zp"], ["p"], MS, kernel_shape=[2, 2], strides=[1, 1]),
         n("QLinearGlobalAveragePool", ["p", "sc", "zp", "sc", "zp"], ["y"], MS, channels_last=0)],
        IMG, {**QUANT, "qw": _u8(4, 3, 3, 3)}, HW),
    "FusedMatMul-Gemm": Case([n("FusedMatMul", ["x", "mw"], ["m"], MS, transB=1, alpha=0.5),
                              n("Flatten", ["m"], ["f"], axis=2),
                              n("FusedGemm", ["f", "gw"], ["y"], MS, activation="Relu")], X3,
                             {"mw": w(5, 8), "gw": w(5, 3)}),
    "ExpandDims-CDist": Case([n("ExpandDims", ["x2", "ax"], ["e"], MS), n("Squeeze", ["e", "ax0"], ["s2"]),
                              n("CDist", ["s2", "t"], ["y"], MS)],
                             [("x2", ["s", 8], F)], {"ax": np.array(0, np.int32), "ax0": np.array([0], np.int64),
                                                     "t": w(4, 8)}),
    "onnxruntime-run-fallback": Case(
        [n("GatherND", ["x", "idx"], ["y"], MS)], X3, {"idx": np.array([[0], [1]], np.int64)}),
}


@pytest.mark.parametrize("name", list(CONTRIB))
def test_contrib_op_shapes_match_onnxruntime(name):
    case = CONTRIB[name]
    if "seqlens" in case.feeds:  # seqlens_k holds total length - 1, which differs per point
        sym = make_symbols(case.statics)
        for p in (0, 1, 2):
            total = sym["p"].vals[p] + sym["s"].vals[p]
            case.feeds = {"seqlens": lambda shp, t=total: np.full(shp, t - 1, np.int32)}
            assert_matches_onnxruntime(case, points=(p,))
        return
    assert_matches_onnxruntime(case)


NCHWC_CASES = {
    "reorder-conv-pool": Case(
        [n("ReorderInput", ["x"], ["r"], NCHWC),
         n("Conv", ["r", "cw", "cb"], ["c"], NCHWC, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
           activation="Relu"),
         n("MaxPool", ["c"], ["mp"], NCHWC, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
         n("AveragePool", ["mp"], ["ap"], NCHWC, kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0]),
         n("Upsample", ["ap"], ["up"], NCHWC, scales=[1, 1, 2, 2]),
         n("GlobalAveragePool", ["up"], ["g"], NCHWC),
         n("ReorderOutput", ["up"], ["y"], NCHWC, channels=16),
         n("ReorderOutput", ["g"], ["y2"], NCHWC, channels=16)],
        [("x", ["b", 8, "h", "w"], F)], {}, HW, outputs=["y", "y2"]),
}


@pytest.mark.parametrize("name", list(NCHWC_CASES))
def test_nchwc_shapes_match_onnxruntime(name):
    block = nchwc_block()
    if block < 8:
        pytest.skip("this onnxruntime build has no NCHWc kernels")
    case = NCHWC_CASES[name]
    out_ch = -(-16 // block) * block
    case.inits = {"cw": w(out_ch, -(-8 // block) * block, 3, 3), "cb": w(out_ch)}
    assert_matches_onnxruntime(case)


ONNX_FALLBACK = {  # ops without a handler: onnx's own inference at each sample point
    "DepthToSpace-SpaceToDepth": Case([n("SpaceToDepth", ["x"], ["a"], blocksize=2),
                                       n("DepthToSpace", ["a"], ["y"], blocksize=2)],
                                      [("x", ["b", 4, "h", "w"], F)], statics=HW, multiples={"h": 2, "w": 2}),
    "ConvTranspose": Case([n("ConvTranspose", ["x", "cw"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                             output_padding=[1, 1])], IMG, {"cw": w(3, 4, 3, 3)}, HW),
    "Einsum": Case([n("Einsum", ["x", "x"], ["y"], equation="bsd,btd->bst")], X3),
    "TopK": Case([n("TopK", ["x", "k"], ["v", "i"], axis=1)], X3, {"k": np.array([3], np.int64)}),
    "OneHot": Case([n("OneHot", ["ids", "depth", "vals"], ["y"])], [("ids", ["b", "s"], I64)],
                   {"depth": np.array(7, np.int64), "vals": np.array([0, 1], np.float32)}),
    "GridSample": Case([n("GridSample", ["x", "grid"], ["y"])], [*IMG, ("grid", ["b", "h", "w", 2], F)],
                       statics=HW),
    "ScatterND-ReverseSequence": Case(
        [n("ReverseSequence", ["x", "lens"], ["r"], batch_axis=0, time_axis=1),
         n("ScatterND", ["r", "idx", "upd"], ["y"])],
        [*X3, ("lens", ["b"], I64), ("idx", ["b", 1], I64), ("upd", ["b", "s", 8], F)]),
    "Col2Im-free reductions": Case([n("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
                                    n("LpNormalization", ["m"], ["y"], axis=-1)], X3),
}


@pytest.mark.parametrize("name", list(ONNX_FALLBACK))
def test_onnx_inference_fallback_matches_onnxruntime(name):
    case = ONNX_FALLBACK[name]
    if name.startswith("ScatterND"):
        case.feeds = {"lens": lambda shp: np.ones(shp, np.int64), "idx": lambda shp: np.zeros(shp, np.int64)}
    assert_matches_onnxruntime(case)


def test_ops_table_is_complete_and_current():
    """Every op of onnx's schema list (and onnxruntime's contrib list) has a row, with how it is covered;
    docs/OPS.md is the generated table."""
    onnx_ops = {(s.domain, s.name) for s in onnx.defs.get_all_schemas_with_history()
                if s.domain in coverage.ONNX_DOMAINS}
    rows = coverage.onnx_rows() + coverage.ort_rows()
    assert onnx_ops <= {(r.domain, r.op) for r in rows}
    assert {r.how for r in rows} <= set(coverage.HOW)
    assert (MS, "GroupQueryAttention", "handler") in {(r.domain, r.op, r.how) for r in rows}
    assert ("", "SimplifiedLayerNormalization", "handler") in {(r.domain, r.op, r.how) for r in rows}
    assert DOCS.read_text() == coverage.markdown(), "regenerate: python -m winml_dynify.coverage > docs/OPS.md"


def test_scatter_updates_follow_the_indices_and_data(rng):
    """A baked updates constant of a ScatterND over a batch-dynamic tensor must follow batch: it is bound
    (a fill, rewritten as an Expand) instead of failing at run time."""
    from conftest import make_model, run, tensor

    from winml_dynify import dynify

    m = make_model([n("Transpose", ["x"], ["xt"], perm=[1, 0, 2]), n("ScatterND", ["xt", "idx", "upd"], ["s"]),
                    n("Transpose", ["s"], ["y"], perm=[1, 0, 2])], [tensor("x", [1, 4, 3])], [tensor("y", [1, 4, 3])],
                   {"idx": np.array([[1], [3]], np.int64), "upd": np.full((2, 1, 3), 5.0, np.float32)})
    res = dynify(m, ["x:0=batch"])
    x = rng.standard_normal((3, 4, 3)).astype(np.float32)
    want = x.copy()
    want[:, [1, 3]] = 5.0
    np.testing.assert_allclose(run(res.model, {"x": x})[0], want)
