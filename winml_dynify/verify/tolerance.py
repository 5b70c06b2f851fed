"""Comparison tolerances that fit the model: its compute precision and its own run-to-run noise.

The precision is read from the graph (float16/bfloat16 tensors, int8 quantise/dequantise pairs). The
noise floor is what the *original* model differs from itself between onnxruntime optimisation levels
on the same inputs: a rewrite cannot be asked to agree more closely than that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

# (rtol, atol relative to the output's magnitude) per compute precision
PRECISIONS = {"float32": (1e-3, 1e-4), "float16": (1e-2, 1e-2), "bfloat16": (4e-2, 4e-2), "int8": (5e-2, 5e-2)}
NOISE_FACTOR = 4.0  # a rewrite may differ by a few times the original's own noise
# float32 rounding of sums of terms as large as the output: a result near 0 from values of magnitude M carries
# about sqrt(K) * eps * M of error (K the terms summed), whatever order a batched kernel adds them in
F32_ROUNDING = 16 * float(np.finfo(np.float32).eps)
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention",
             "QGemm", "MatMulNBits", "QLinearAdd", "QLinearMul"}


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float
    why: str = ""


def precision(model: onnx.ModelProto) -> str:
    """The lowest precision the graph computes in: int8 (quantised), bfloat16, float16 or float32."""
    g = model.graph
    if any(n.op_type in QUANT_OPS for n in g.node):
        return "int8"
    types = {t.data_type for t in g.initializer}
    types |= {vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    types |= {a.i for n in g.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    if onnx.TensorProto.BFLOAT16 in types:
        return "bfloat16"
    if onnx.TensorProto.FLOAT16 in types:
        return "float16"
    return "float32"


def tolerances(prec: str, names: list[str], probe: list[np.ndarray], noise: list[float]) -> dict[str, Tol]:
    """Per output: the precision's tolerance (its atol scaled by the output's magnitude below float32; in
    float32 at least ``F32_ROUNDING`` times that magnitude) widened to ``NOISE_FACTOR`` times the original's
    measured noise."""
    rtol, atol = PRECISIONS[prec]
    out = {}
    for name, y, nz in zip(names, probe, noise, strict=True):
        top = 1.0
        if y.dtype.kind == "f" and y.size and np.isfinite(y).any():
            top = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(y), y, 0)))))
        a = atol * top if prec != "float32" else max(atol, F32_ROUNDING * top)
        why = f"{prec} compute" + (f" at magnitude {top:.3g}" if a > atol else "")
        if NOISE_FACTOR * nz > a:
            a, why = NOISE_FACTOR * nz, f"{prec} compute, original's own noise {nz:.2g}"
        out[name] = Tol(rtol, a, why)
    return out


def noise(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    """Per output, the largest finite absolute difference between two runs of the original."""
    out = []
    for x, y in zip(a, b, strict=True):
        if x.dtype.kind != "f" or x.shape != y.shape or not x.size:
            out.append(0.0)
            continue
        d = np.abs(x.astype(np.float64) - y.astype(np.float64))
        d = d[np.isfinite(d)]
        out.append(float(d.max()) if d.size else 0.0)
    return out


def diff(a: np.ndarray, b: np.ndarray, tol: Tol) -> tuple[bool, float, float]:
    """Whether ``a`` matches ``b`` within ``tol`` (exactly for non-float outputs); max abs and rel diff."""
    if a.shape != b.shape:
        return False, float("inf"), float("inf")
    if a.size == 0:
        return True, 0.0, 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    d = np.where(both_nan, 0.0, np.abs(a64 - b64))
    rel = d / np.maximum(np.abs(b64), 1e-12)
    ok = bool(np.allclose(a64, b64, rtol=tol.rtol, atol=tol.atol, equal_nan=True)) if a.dtype.kind in "fc" \
        else bool(np.array_equal(a, b))
    return ok, float(np.nanmax(d)), float(np.nanmax(np.where(d == 0, 0.0, rel)))
