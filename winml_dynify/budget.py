"""The memory budget of the parity checks: a shape whose check inputs would not fit is never attempted;
and the process's peak resident memory, which the checks report."""

from __future__ import annotations

import math
import sys

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


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB: VmHWM where /proc has it (exec resets it, unlike
    ``ru_maxrss``, which keeps a parent's higher peak), else ``resource``; None where neither exists."""
    try:
        with open("/proc/self/status") as f:
            return round(next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10), 1)
