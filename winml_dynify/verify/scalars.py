"""Size-like scalars: folded sizes that no oracle could rule out."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .report import Check, VerifyReport


def size_like_scalars(model: onnx.ModelProto, statics: dict[str, int], report: VerifyReport,
                      batches: set[str] = frozenset()) -> list[Check]:
    """Scalars left in the rewritten graph that look like a folded size (``s``, ``1/s``, ``s**-0.5``,
    ``s**0.5`` for an exported size ``s`` >= 4) and feed arithmetic, or equal ``s`` and feed a position
    look-up or comparison (the position ``past`` of a decode step exported at ``seq`` 1), for a symbol
    that no oracle checked at another size: each is a failed check, since a folded ``x.size(1) ** -0.5``
    would be silently wrong there while a hyperparameter of that value would be right. A ``--reference``
    settles it. An exponent (``Pow``'s second input, GELU's ``x ** 3``) is not taken for a size. A
    comparison with another constant that gives the same answer for every size from 1 up (``0 < 16``, a
    loop's first condition) cannot tell them apart and is no evidence. The per-sample oracle counts only
    for ``batches`` (axis-0 symbols): it runs the original at its own size, so on any other axis it cannot
    see a folded length."""
    checked = {s for c in report.checks if c.status == "passed" for s, v in c.shape.items()
               if v != statics.get(s) and (c.oracle != "per-sample" or s in batches)}
    arithmetic = {"Mul", "Div", "Pow", "Sqrt", "Add", "Sub"}
    positional = {"Gather", "MatMul", "LessOrEqual", "Less", "GreaterOrEqual", "Greater"}  # a folded position id
    users: dict[str, set[str]] = {}
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if not (n.op_type == "Pow" and k == 1):  # an exponent (GELU's x**3) is no folded size
                users.setdefault(i, set()).add(n.op_type)
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if int(np.prod(t.dims)) == 1}
    settled = _settled_comparisons(model, values)
    scalars = [(t.name, helper.tensor_dtype_to_np_dtype(t.data_type), onnx.numpy_helper.to_array(t))
               for t in model.graph.initializer if int(np.prod(t.dims)) == 1 and not t.name.startswith("dynify/")]
    scalars += [(n.output[0], None, onnx.numpy_helper.to_array(n.attribute[0].t)) for n in model.graph.node
                if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
                and int(np.prod(n.attribute[0].t.dims)) == 1]
    out = []
    for s, size in statics.items():
        if s in checked or size < 4:
            continue
        forms = {"": size, "1/": 1 / size, "**-0.5 of ": size ** -0.5, "sqrt of ": size ** 0.5}
        for name, _, arr in scalars:
            v = float(arr.reshape(-1)[0]) if arr.dtype.kind in "iuf" else None
            if v is None or not users.get(name, set()) & (arithmetic | positional) or name in settled:
                continue
            if arr.dtype.kind != "f" or not users[name] & arithmetic:  # a lone position: only the size itself
                hit = "" if v == size and users[name] & positional else None
            else:
                hit = next((f for f, x in forms.items() if np.isclose(v, x, rtol=1e-6)), None)
            if hit is not None:
                out.append(Check("scalar", {s: size}, "-", "failed", note=(
                    f"constant '{name}' = {v:g} is {hit}{s}'s exported size and feeds "
                    f"{'arithmetic' if users[name] & arithmetic else 'a position look-up'}; no oracle "
                    f"checked other {s} sizes, so a folded size cannot be ruled out: give --reference exports")))
    return out


_COMPARE = {"Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater, "GreaterOrEqual": np.greater_equal}


def _settled_comparisons(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> set[str]:
    """Scalar constants used only in comparisons with another scalar constant whose answer is the same
    whatever size from 1 to 2**31 the first one stands for (comparisons are monotone in it, so the two ends
    decide)."""
    verdict: dict[str, bool] = {}
    for n in model.graph.node:
        for k, name in enumerate(n.input):
            if name not in values:
                continue
            other = n.input[1 - k] if n.op_type in _COMPARE and len(n.input) == 2 else None
            if other is None or other not in values:
                verdict[name] = False
                continue
            fn, c = _COMPARE[n.op_type], float(values[other].reshape(-1)[0])
            ends = {bool(fn(x, c) if k == 0 else fn(c, x)) for x in (1.0, 2.0**31)}
            verdict[name] = verdict.get(name, True) and len(ends) == 1
    return {name for name, ok in verdict.items() if ok}
