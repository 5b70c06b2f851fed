"""``inspect_model``: the inputs and outputs of a model, its candidate dynamic axes, and whether each
preset's selection can be made dynamic (a dry run of the rewrite, without verification)."""

from __future__ import annotations

import os
from collections import Counter

import onnx

from . import io
from .api import dynify
from .errors import DynifyError, RefusedError
from .presets import PRESETS, graph_inputs
from .sidecar import TAG_KEY, sidecar_path


def _spec(name: str, elem_type: int, dims: list[int | str | None]) -> dict:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else None
    return {"name": name, "dtype": dtype, "shape": dims}


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def _try(model: onnx.ModelProto, axes: list[tuple[str, int, str]]) -> dict:
    """Dry-run the rewrite for ``axes``: the rewrites it needs, or why it is refused."""
    try:
        res = dynify(model, axes, verify=False)
    except RefusedError as e:
        return {"status": "refused", "message": str(e)}
    except DynifyError as e:
        return {"status": "error", "message": str(e)}
    return {
        "status": "ok",
        "rewrites": len(res.rewrites),
        "rules": dict(sorted(Counter(rw["rule"] for rw in res.rewrites).items())),
        "targets": [rw["target"] for rw in res.rewrites],
        "ranges": {s: {"static": r.static, "min": r.min, "max": r.max, "reason": r.reason}
                   for s, r in res.ranges.items()},
        "outputs": res.outputs,
    }


def inspect_model(model: onnx.ModelProto | str | os.PathLike) -> dict:
    """Describe ``model`` for choosing dynamic axes.

    Returns a dict with ``inputs`` and ``outputs`` (``{name, dtype, shape}``), ``candidates`` (every static
    dim of every input, with the presets that would pick it: ``{preset: symbol}``), ``presets`` (per preset:
    the axes it selects and the outcome of rewriting them: ``ok`` with the rewrites, the rewritten constants
    and the symbol ranges, ``refused`` or ``error`` with the message, or ``unavailable`` when the preset
    selects nothing),
    ``combined`` (all applicable presets together) and ``hierarchy`` (winml tag coverage and sidecar).
    """
    path = None if isinstance(model, onnx.ModelProto) else model
    model = io.load(model) if path is not None else model
    inputs = graph_inputs(model)
    info: dict = {
        "inputs": [_spec(i.name, i.elem_type, list(i.dims)) for i in inputs],
        "outputs": [_spec(vo.name, vo.type.tensor_type.elem_type, _dims(vo)) for vo in model.graph.output],
    }
    presets: dict[str, dict] = {}
    chosen: dict[str, list[tuple[str, int, str]]] = {}
    picked: dict[tuple[str, int], dict[str, str]] = {}
    for name, pick in PRESETS.items():
        try:
            sel = pick(model)
        except DynifyError as e:
            presets[name] = {"axes": [], "status": "unavailable", "message": str(e)}
            continue
        chosen[name] = sel.axes
        for inp, axis, sym in sel.axes:
            picked.setdefault((inp, axis), {})[name] = sym
        presets[name] = {"axes": [f"{i}:{a}={s}" for i, a, s in sel.axes], "notes": sel.notes,
                         **_try(model, sel.axes)}
    info["candidates"] = [
        {"input": i.name, "axis": k, "size": d, "presets": picked.get((i.name, k), {})}
        for i in inputs for k, d in enumerate(i.dims) if isinstance(d, int) or (i.name, k) in picked
    ]
    info["presets"] = presets
    usable = [n for n in presets if chosen.get(n)]
    if len(usable) > 1:
        axes = [a for n in usable for a in chosen[n]]
        info["combined"] = {"presets": usable, "axes": [a for n in usable for a in presets[n]["axes"]],
                            **_try(model, axes)}
    tagged = sum(1 for n in model.graph.node if any(p.key == TAG_KEY and p.value for p in n.metadata_props))
    side = sidecar_path(path) if path is not None else None
    info["hierarchy"] = {"nodes": len(model.graph.node), "tagged_nodes": tagged,
                         "sidecar": str(side) if side is not None and side.is_file() else None}
    return info

