"""Shape handlers for the operators onnxruntime writes into optimised and quantised graphs.

onnxruntime's offline optimiser and quantiser emit contrib operators of three placements: the
``com.microsoft`` domain (fused attention, normalisations, activations, quantised linear algebra),
the ``com.microsoft.nchwc`` domain (blocked-layout convolutions and pools of ``ORT_ENABLE_ALL``) and
the default domain for ``SimplifiedLayerNormalization``. onnx's own shape inference knows none of
them, so each one used by those writers has a handler here. A ``com.microsoft`` operator without one
is inferred by running it alone in onnxruntime at each sample point (:func:`ort_fallback`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from .context import Ctx, TInfo
from .dims import N_POINTS, Dim, const
from .ops import _broadcast_shapes, _conv_out, _gemm, _matmul_shape, _with_value, concat_shape, op

MS, NCHWC = "com.microsoft", "com.microsoft.nchwc"
Ins = list[TInfo | None]
Outs = list[TInfo | None]


def _given(ins: Ins, k: int) -> TInfo | None:
    return ins[k] if len(ins) > k else None


def _sum(*dims: Dim) -> Dim:
    """A dim that is the sum of others (a past length plus a new one)."""
    vals = tuple(sum(d.vals[p] for d in dims) for p in range(N_POINTS))
    return Dim(vals, terms=dims if len(dims) > 1 else None)


def _scaled(d: Dim, num: int, den: int) -> Dim:
    """``d * num / den`` (a hidden size split into heads)."""
    return d if num == den else Dim(tuple(v * num // den for v in d.vals))


def _stats_shape(shape: list[Dim], axis: int) -> list[Dim]:
    """The mean / inverse-std output of a normalisation over ``axis`` and the axes after it."""
    axis = axis + len(shape) if axis < 0 else axis
    return shape[:axis] + [Dim(const(1))] * (len(shape) - axis)


def _float(info: TInfo, shape: list[Dim]) -> TInfo:
    return TInfo(shape, None, None, info.dtype)


# -- same shape as the first input -----------------------------------------------------------------
@op("Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasAdd", "BiasSoftmax", "RotaryEmbedding",
    "GemmaRotaryEmbedding", "Inverse", "QOrderedGelu", "QuantizeLinear", "DequantizeLinear",
    "QuantizeWithOrder", "DequantizeWithOrder", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax",
    "ScaledSiLU", "Trilu", "GroupNorm", "SkipGroupNorm", "QOrderedLayerNormalization", "IsAllFinite",
    domain=MS)
def _same(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Elementwise activations, rotary embeddings, (de)quantisation and normalisations: the output is
    the first input's shape (``BiasAdd``/``SkipGroupNorm`` add broadcast operands of the same shape)."""
    x = ins[0]
    if node.op_type in ("BiasAdd", "SkipGroupNorm") and _given(ins, 3 if node.op_type == "SkipGroupNorm" else 2):
        skip = ins[3] if node.op_type == "SkipGroupNorm" else ins[2]
        _broadcast_shapes(ctx, [x.shape, skip.shape])
    if node.op_type == "IsAllFinite":
        return [TInfo([], None, None, TensorProto.BOOL)]
    dtype = x.dtype
    if node.op_type in ("QuantizeLinear", "QuantizeWithOrder") and _given(ins, 2) is not None:
        dtype = ins[2].dtype
    elif node.op_type in ("DequantizeLinear", "DequantizeWithOrder") and ins[1] is not None:
        dtype = ins[1].dtype
    outs: Outs = [TInfo(x.shape, None, None, dtype)]
    return outs + [TInfo(x.shape, None, None, dtype)] * (len(node.output) - 1)


@op("BiasDropout", "BitmaskBiasDropout", domain=MS)
def _bias_dropout(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x = ins[0]
    return [_float(x, x.shape), TInfo(x.shape, None, None, TensorProto.BOOL)][: len(node.output)]


@op("BiasSplitGelu", domain=MS)
def _bias_split_gelu(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x = ins[0]
    return [_float(x, [*x.shape[:-1], _scaled(x.shape[-1], 1, 2)])]


@op("LayerNormalization", "SimplifiedLayerNormalization")
def _layer_norm(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Y has X's shape; the optional mean / inverse-std outputs keep the axes before ``axis``."""
    x = ins[0]
    stats = TInfo(_stats_shape(x.shape, ctx.attr("axis", -1)), None, None, TensorProto.FLOAT)
    return [_float(x, x.shape)] + [stats] * (len(node.output) - 1)


@op("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", domain=MS)
def _skip_layer_norm(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Outputs: the normalised sum, mean and inverse std over the last axis, and the sum itself."""
    x = ins[0]
    if ins[1] is not None:
        _broadcast_shapes(ctx, [x.shape, ins[1].shape])
    stats = TInfo(_stats_shape(x.shape, -1), None, None, TensorProto.FLOAT)
    return [_float(x, x.shape), stats, stats, _float(x, x.shape)][: len(node.output)]


@op("EmbedLayerNormalization", "QEmbedLayerNormalization", domain=MS)
def _embed_layer_norm(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """``input_ids [B, S]`` and the word table ``[V, D]`` give ``[B, S, D]``; positions index the
    position table from 0, so ``S`` is at most its row count; ``mask_index`` is ``[B]``."""
    ids, word, pos = ins[0], ins[2], ins[3]
    b, s = ids.shape
    if not s.static and pos is not None and pos.shape[0].static and _given(ins, 8) is None:
        ctx.upper_bound(s.vals, pos.shape[0].s0, f"position table of {pos.shape[0].s0} rows at '{node.name}'")
    out = TInfo([b, s, word.shape[1]], None, None, word.dtype)
    outs: Outs = [out, TInfo([b], None, None, TensorProto.INT32), out]
    return outs[: len(node.output)]


# -- attention ----------------------------------------------------------------------------------
def _present(ctx: Ctx, past: TInfo | None, new: Dim, heads: Dim, head: Dim, batch: Dim, dtype: int) -> TInfo:
    """A key/value cache ``[B, N, P + L, H]`` (``P`` = 0 without a past)."""
    if past is None:
        return TInfo([batch, heads, new, head], None, None, dtype)
    return TInfo([past.shape[0], past.shape[1], _sum(past.shape[2], new), past.shape[3]], None, None, dtype)


@op("Attention", "QAttention", domain=MS)
def _attention(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """``input [B, S, D_in]`` times the packed QKV weight: output ``[B, S, D_v]``; the optional
    ``present [2, B, N, P + S, H]`` extends ``past [2, B, N, P, H]`` (input 4 of Attention, 8 of
    QAttention)."""
    x, w = ins[0], ins[1]
    sizes = ctx.attr("qkv_hidden_sizes")
    n = ctx.attr("num_heads")
    hv = Dim(const(sizes[2])) if sizes else _scaled(w.shape[1], 1, 3)
    outs: Outs = [TInfo([x.shape[0], x.shape[1], hv], None, None, x.dtype)]
    if len(node.output) > 1 and node.output[1]:
        past = _given(ins, 4 if node.op_type == "Attention" else 8)
        head = _scaled(hv, 1, n)
        if past is None:
            present = [Dim(const(2)), x.shape[0], Dim(const(n)), x.shape[1], head]
        else:
            present = [*past.shape[:3], _sum(past.shape[3], x.shape[1]), past.shape[4]]
        outs.append(TInfo(present, None, None, x.dtype))
    return outs


@op("MultiHeadAttention", "DecoderMaskedMultiHeadAttention", domain=MS)
def _multi_head_attention(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Query ``[B, S, D]`` (or packed ``[B, S, N, 3, H]``), key/value ``[B, L, D]``, ``[B, N, L, H]``
    (already in cache layout) or packed ``[B, L, N, 2, H]``; output ``[B, S, D_v]`` and the caches
    ``[B, N, P + L, H]``."""
    q, k, v = ins[0], _given(ins, 1), _given(ins, 2)
    n = Dim(const(ctx.attr("num_heads")))
    b, s = q.shape[0], q.shape[1]
    if k is None:  # packed QKV
        head = q.shape[4]
        length, dv, head_v = s, Dim(tuple(n.s0 * x for x in head.vals)), head
    elif len(k.shape) == 5:  # packed KV
        head = k.shape[4]
        length, dv, head_v = k.shape[1], q.shape[2], head
    elif len(k.shape) == 4:  # cache layout: key and value are the full caches
        length, head = k.shape[2], k.shape[3]
        head_v = v.shape[3]
        dv = Dim(tuple(n.s0 * x for x in head_v.vals))
    else:
        length, head = k.shape[1], _scaled(k.shape[2], 1, n.s0)
        head_v = _scaled(v.shape[2], 1, n.s0)
        dv = v.shape[2]
    outs: Outs = [TInfo([b, s, dv], None, None, q.dtype)]
    past_k, past_v = _given(ins, 6), _given(ins, 7)
    if len(k.shape if k is not None else []) == 4:
        outs += [TInfo(k.shape, None, None, q.dtype), TInfo(v.shape, None, None, q.dtype)]
    else:
        outs += [_present(ctx, past_k, length, n, head, b, q.dtype),
                 _present(ctx, past_v, length, n, head_v, b, q.dtype)]
    return outs[: len(node.output)]


@op("GroupQueryAttention", domain=MS)
def _group_query_attention(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Query ``[B, S, N*H]`` (or packed QKV ``[B, S, (N + 2*K)*H]``), caches ``[B, K, P, H]``; the
    caches come out ``max(total_sequence_length, P)`` long (the value of input 6)."""
    q = ins[0]
    n, kv = ctx.attr("num_heads"), ctx.attr("kv_num_heads")
    key = _given(ins, 1)
    head = _scaled(q.shape[2], 1, n) if key is not None else _scaled(q.shape[2], 1, n + 2 * kv)
    b, s = q.shape[0], q.shape[1]
    outs: Outs = [TInfo([b, s, Dim(tuple(n * h for h in head.vals))], None, None, q.dtype)]
    if len(node.output) > 1:
        past, total = _given(ins, 3), _given(ins, 6)
        if total is None or total.value is None:
            return [*outs, None, None][: len(node.output)]
        tot = total.value[0]
        past_len = past.shape[2].vals if past is not None else const(0)
        length = Dim(tuple(max(t, p) for t, p in zip(tot, past_len, strict=True)))
        cache = TInfo([b, Dim(const(kv)), length, head], None, None, q.dtype)
        outs += [cache, cache]
    return outs[: len(node.output)]


# -- matrix products ---------------------------------------------------------------------------
@op("MatMulNBits", "MatMulBnb4", "MatMulFpQ4", domain=MS)
def _matmul_blockwise(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """``A [..., K]`` times a packed ``[K, N]`` weight (attribute ``N``): ``[..., N]``."""
    a = ins[0]
    return [_float(a, [*a.shape[:-1], Dim(const(ctx.attr("N")))])]


@op("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger16", "GemmFastGelu", domain=MS)
def _matmul_like(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    dtype = TensorProto.INT32 if node.op_type == "MatMulInteger16" else ins[0].dtype
    if node.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat") and ins[2] is not None:
        dtype = ins[2].dtype
    return [TInfo(_matmul_shape(ctx, ins[0].shape, ins[1].shape), None, None, dtype)]


@op("QOrderedMatMul", domain=MS)
def _qordered_matmul(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    return [TInfo(_matmul_shape(ctx, ins[0].shape, ins[2].shape), None, None, ins[0].dtype)]


@op("FusedMatMul", "TransposeMatMul", domain=MS)
def _fused_matmul(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """MatMul with either operand's last two axes swapped (``transA``/``transB``; ``transBatch*`` move
    the batch axes as well, which ORT's optimiser never sets on the graphs it writes)."""
    a, b = list(ins[0].shape), list(ins[1].shape)
    if ctx.attr("transBatchA", 0) or ctx.attr("transBatchB", 0):
        return [None]
    if ctx.attr("transA", 0):
        a[-2], a[-1] = a[-1], a[-2]
    if ctx.attr("transB", 0):
        b[-2], b[-1] = b[-1], b[-2]
    return [TInfo(_matmul_shape(ctx, a, b), None, None, ins[0].dtype)]


op("FusedGemm", "GemmFloat8", domain=MS)(_gemm)


@op("QGemm", domain=MS)
def _qgemm(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """``A, a_scale, a_zp, B, ...``: the Gemm of inputs 0 and 3."""
    a, b = ins[0].shape, ins[3].shape
    m, k1 = (a[1], a[0]) if ctx.attr("transA", 0) else (a[0], a[1])
    k2, n = (b[1], b[0]) if ctx.attr("transB", 0) else (b[0], b[1])
    ctx.equate(k1, k2, contraction=True)
    dtype = ins[7].dtype if _given(ins, 7) is not None else TensorProto.FLOAT
    return [TInfo([m, n], None, None, dtype)]


# -- quantised elementwise ------------------------------------------------------------------------
@op("QLinearAdd", "QLinearMul", domain=MS)
def _qlinear_binary(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """``A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp``: the broadcast of A and B."""
    return [TInfo(_broadcast_shapes(ctx, [ins[0].shape, ins[3].shape]), None, None, ins[0].dtype)]


@op("QLinearWhere", domain=MS)
def _qlinear_where(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    shapes = [ins[0].shape, ins[1].shape, ins[4].shape]
    return [TInfo(_broadcast_shapes(ctx, shapes), None, None, ins[1].dtype)]


@op("QLinearConcat", domain=MS)
def _qlinear_concat(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """``Y_scale, Y_zp`` then ``(X, X_scale, X_zp)`` triples, concatenated along ``axis``."""
    parts = [ins[k] for k in range(2, len(ins), 3)]
    rank = len(parts[0].shape)
    axis = ctx.attr("axis")
    return [TInfo(concat_shape(ctx, parts, axis + rank if axis < 0 else axis), None, None, parts[0].dtype)]


@op("QLinearReduceMean", domain=MS)
def _qlinear_reduce_mean(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x = ins[0]
    r = len(x.shape)
    axes = [a + r if a < 0 else a for a in ctx.attr("axes")]
    keep = ctx.attr("keepdims")
    return [TInfo([Dim(const(1)) if k in axes else d for k, d in enumerate(x.shape) if keep or k not in axes],
                  None, None, x.dtype)]


# -- convolutions and pools: NCHW, NHWC and the blocked NCHWc layout ------------------------------
def _nchw(shape: list[Dim], channels_last: bool) -> list[Dim]:
    return [shape[0], shape[-1], *shape[1:-1]] if channels_last else shape


def _back(shape: list[Dim], channels_last: bool) -> list[Dim]:
    return [shape[0], *shape[2:], shape[1]] if channels_last else shape


@op("Conv", domain=NCHWC)
@op("FusedConv", "QLinearConv", "NhwcConv", "NhwcFusedConv", "ConvTransposeWithDynamicPads", domain=MS)
def _conv(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Convolutions whose filter is ``[M, C/group, k...]`` (NCHWc filters are reordered but keep ``M``,
    the output channels rounded up to the block size); ``Nhwc*`` and ``channels_last`` work on the
    channels-last layout."""
    x = ins[0]
    if node.op_type == "ConvTransposeWithDynamicPads":
        return [None]  # pads are a run-time input; left to verification
    w = ins[3] if node.op_type == "QLinearConv" else ins[1]
    last = node.op_type.startswith("Nhwc") or bool(ctx.attr("channels_last", 0))
    kernel = ctx.attr("kernel_shape") or [d.s0 for d in w.shape[2:]]
    shape = _conv_out(ctx, _nchw(x.shape, last), kernel, w.shape[0])
    dtype = ins[7].dtype if node.op_type == "QLinearConv" else x.dtype
    return [TInfo(_back(shape, last), None, None, dtype)]


@op("MaxPool", "AveragePool", domain=NCHWC)
@op("NhwcMaxPool", "QLinearAveragePool", "MaxpoolWithMask", domain=MS)
def _pool(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x = ins[0]
    last = node.op_type == "NhwcMaxPool" or bool(ctx.attr("channels_last", 0))
    shape = _conv_out(ctx, _nchw(x.shape, last), list(ctx.attr("kernel_shape")), None)
    return [TInfo(_back(shape, last), None, None, x.dtype)]


@op("GlobalAveragePool", "GlobalMaxPool", domain=NCHWC)
@op("QLinearGlobalAveragePool", domain=MS)
def _global_pool(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x = ins[0]
    last = bool(ctx.attr("channels_last", 0))
    shape = _nchw(x.shape, last)
    return [TInfo(_back(shape[:2] + [Dim(const(1))] * (len(shape) - 2), last), None, None, x.dtype)]


@functools.cache
def nchwc_block() -> int:
    """The channel block of onnxruntime's NCHWc kernels on this machine (8 or 16; the optimiser's output
    is only valid where it was written): read from ``ReorderInput`` on a four-channel tensor (its least)."""
    node = helper.make_node("ReorderInput", ["x"], ["y"], domain=NCHWC)
    g = helper.make_graph([node], "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(NCHWC, 1)],
                          ir_version=8)
    try:
        return int(_plain_session(m).run(None, {"x": np.zeros((1, 4, 1, 1), np.float32)})[0].shape[1])
    except Exception:  # a build without NCHWc kernels: no graph can use the layout
        return 1


@op("ReorderInput", domain=NCHWC)
def _reorder_input(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """NCHW (or NHWC with ``channels_last``) to the blocked layout: channels rounded up to the block."""
    x = ins[0]
    shape = _nchw(x.shape, bool(ctx.attr("channels_last", 0)))
    c = shape[1]
    if not c.static:
        ctx.conflict(f"blocked layout of {ctx.name(c.vals)} channels")
        return [None]
    block = nchwc_block()
    return [TInfo([shape[0], Dim(const(-(-c.s0 // block) * block)), *shape[2:]], None, None, x.dtype)]


@op("ReorderOutput", domain=NCHWC)
def _reorder_output(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """Blocked layout back to NCHW (or NHWC) with attribute ``channels`` channels."""
    x = ins[0]
    shape = [x.shape[0], Dim(const(ctx.attr("channels"))), *x.shape[2:]]
    return [TInfo(_back(shape, bool(ctx.attr("channels_last", 0))), None, None, x.dtype)]


@op("Upsample", domain=NCHWC)
def _upsample(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x = ins[0]
    scales = list(ctx.attr("scales"))
    return [TInfo([Dim(tuple(v * s for v in d.vals)) for d, s in zip(x.shape, scales, strict=True)],
                  None, None, x.dtype)]


# -- other contrib ops with a simple shape -------------------------------------------------------
@op("ExpandDims", domain=MS)
def _expand_dims(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x, axis = ins
    if axis.value is None:
        return [None]
    r = len(x.shape) + 1
    a = axis.value[0][0]
    a = a + r if a < 0 else a
    shape = list(x.shape)
    shape.insert(a, Dim(const(1)))
    return [TInfo(shape, x.value, None, x.dtype, x.origins)]


@op("CDist", domain=MS)
def _cdist(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    ctx.equate(ins[0].shape[1], ins[1].shape[1])
    return [TInfo([ins[0].shape[0], ins[1].shape[0]], None, None, ins[0].dtype)]


@op("ComplexMul", "ComplexMulConj", domain=MS)
def _complex_mul(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    return [TInfo(_broadcast_shapes(ctx, [ins[0].shape, ins[1].shape]), None, None, ins[0].dtype)]


@op("GridSample", domain=MS)
def _grid_sample(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    x, grid = ins[0], ins[1]
    return [TInfo([x.shape[0], x.shape[1], *grid.shape[1:-1]], None, None, x.dtype)]


# -- anything else in com.microsoft: onnxruntime itself, once per sample point -----------------------
# output shapes that depend on the data (not on shapes and known values): no point run can tell them
DATA_DEPENDENT = frozenset({"Unique", "RemovePadding", "RestorePadding", "NGramRepeatBlock", "BeamSearch",
                            "GreedySearch", "WhisperBeamSearch", "Sampling", "Tokenizer", "SparseAttention",
                            "PagedAttention", "SparsePagedAttention", "PackedAttention",
                            "PackedMultiHeadAttention", "MoE", "QMoE", "DynamicTimeWarping",
                            "SparseAttentionIndexer", "PackedSparseAttentionIndexer",
                            "PackedSparseAttentionIndexerMerge", "EPContext", "Snpe", "BifurcationDetector"})
MAX_PROBE = 1 << 24  # elements: larger probes are not run (sample sizes reach ~1000 per symbol)


def _probe_input(info: TInfo, p: int) -> np.ndarray | None:
    """The value an input has at point ``p`` when it is known (a constant or a tracked small tensor);
    zeros of its shape for a float tensor (no handled op's output shape depends on float data)."""
    np_type = helper.tensor_dtype_to_np_dtype(info.dtype)
    if info.const is not None and all(d.static for d in info.shape):
        return info.const
    if info.value is not None:
        return info.value_at(p).astype(np_type)
    if np.dtype(np_type).kind != "f":
        return None
    shape = [d.vals[p] for d in info.shape]
    return None if math.prod(shape) > MAX_PROBE else np.zeros(shape, np_type)


def ort_fallback(ctx: Ctx, node: onnx.NodeProto, ins: Ins) -> Outs:
    """A ``com.microsoft`` op without a handler: run it alone in onnxruntime at each sample point with
    the inputs' known values (zeros for float data) and read its output shapes. An op whose output
    shape depends on data, or with an integer input of unknown value, stays unknown."""
    unknown: Outs = [None] * len(node.output)
    if node.op_type in DATA_DEPENDENT or any(i is None or i.shape is None for i in ins):
        return unknown
    per_point = []
    for p in range(N_POINTS):
        feeds = {}
        for name, info in zip(node.input, ins, strict=True):
            if name:
                arr = _probe_input(info, p)
                if arr is None:
                    return unknown
                feeds[name] = arr
        key = node.SerializeToString() + repr([(k, a.shape, a.dtype.str, a.tobytes() if a.dtype.kind != "f" else b"")
                                               for k, a in feeds.items()]).encode()
        if key not in ctx.memo:
            ctx.memo[key] = _run_alone(node, feeds, ctx.opset)
        if ctx.memo[key] is None:
            return unknown
        per_point.append(ctx.memo[key])
    outs: Outs = []
    for k in range(len(node.output)):
        got = [pp[k] for pp in per_point]
        if got[0] is None or len({len(g[0]) for g in got}) != 1:
            outs.append(None)
            continue
        dims = [Dim(tuple(g[0][j] for g in got)) for j in range(len(got[0][0]))]
        vals = [g[2] for g in got] if all(g[2] is not None for g in got) else None
        outs.append(_with_value(dims, vals, got[0][1]))
    return outs


def _plain_session(m: onnx.ModelProto) -> ort.InferenceSession:
    """A quiet CPU session of ``m`` with no graph optimisation (the node as written)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run_alone(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int) -> list | None:
    """Per output: (shape, element type, integer value when small) of ``node`` run alone; None on failure."""
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for k, a in feeds.items()]
    outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    g = helper.make_graph([node], "probe", inputs, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(node.domain, 1)],
                          ir_version=8)
    try:
        got = _plain_session(m).run(None, feeds)
    except Exception:  # onnxruntime cannot run it alone here: leave the outputs unknown
        return None
    res = iter(got)
    out = []
    for o in node.output:
        if not o:
            out.append(None)
            continue
        a = next(res)
        small = a.dtype.kind in "iu" and a.size <= 64
        out.append((list(a.shape), helper.np_dtype_to_tensor_dtype(a.dtype), a if small else None))
    return out
