"""Size-like scalars: folded sizes that no oracle could rule out."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .report import Check, VerifyReport


def size_like_scalars(model: onnx.ModelProto, statics: dict[str, int], report: VerifyReport,
                      batches: set[str] = frozenset()) -> list[Check]:
    """Scalars left in the rewritten graph that look like a folded size (``s``, ``1/s``, ``s**-0.5``,
    ``s**0.5`` for an exported size ``s`` >= 4) and feed arithmetic, for a symbol that no oracle checked
    at another size: each is a failed check, since a folded ``x.size(1) ** -0.5`` would be silently wrong
    there while a hyperparameter of that value would be right. A ``--reference`` settles it. The
    per-sample oracle counts only for ``batches`` (axis-0 symbols): it runs the original at its own size,
    so on any other axis it cannot see a folded length."""
    checked = {s for c in report.checks if c.status == "passed" for s, v in c.shape.items()
               if v != statics.get(s) and (c.oracle != "per-sample" or s in batches)}
    arithmetic = {"Mul", "Div", "Pow", "Sqrt", "Add", "Sub"}
    users: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.op_type)
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
            if arr.dtype.kind != "f" or not users.get(name, set()) & arithmetic:
                continue
            v = float(arr.reshape(-1)[0])
            hit = next((f for f, x in forms.items() if np.isclose(v, x, rtol=1e-6)), None)
            if hit is not None:
                out.append(Check("scalar", {s: size}, "-", "failed", note=(
                    f"constant '{name}' = {v:g} is {hit}{s}'s exported size and feeds arithmetic; no oracle "
                    f"checked other {s} sizes, so a folded size cannot be ruled out: give --reference exports")))
    return out
