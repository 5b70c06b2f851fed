"""The memory budget of the parity checks: a shape whose check inputs would not fit is never attempted."""

from __future__ import annotations

import math

import onnx

from .spec import AxisSpec

CHECK_BUDGET = 2**30  # bytes of generated check inputs (drawn as float64/int64: 8 bytes an element)


def feed_bytes(model: onnx.ModelProto, specs: list[AxisSpec], values: dict[str, int]) -> int:
    """Bytes the check inputs of ``model`` take at the symbol sizes ``values`` (static dims as exported)."""
    chosen = {(s.input, s.axis): s.symbol for s in specs}
    inits = {t.name for t in model.graph.initializer}
    total = 0
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = []
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            sym = chosen.get((vi.name, k)) or d.dim_param
            dims.append(values.get(sym, 1) if sym else max(d.dim_value, 1))
        total += 8 * math.prod(dims)
    return total


def over_budget(model: onnx.ModelProto, specs: list[AxisSpec], values: dict[str, int],
                budget: int = CHECK_BUDGET) -> str:
    """Why a check at ``values`` is not attempted ("" when its inputs fit the budget)."""
    need = feed_bytes(model, specs, values)
    if need <= budget:
        return ""
    return (f"its check inputs would take {need / 2**30:.3g} GiB, above the {budget / 2**30:g} GiB check "
            "budget: not attempted")
