"""Presets: pick the usual dynamic axes of a model from its inputs (batch, sequence, image height/width).

Each preset looks only at the graph inputs (names, element types and static dims) and returns the axes it
selects as ``(input, axis, symbol)`` requests for :func:`winml_dynify.dynify`. A preset that finds nothing
to select, or finds candidates that disagree (inputs whose dims cannot share one symbol), raises
:class:`UsageError` naming the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from .errors import UsageError

BATCH, SEQ, HEIGHT, WIDTH = "batch", "sequence_length", "height", "width"
TOKEN_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_INTEGER = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
            TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.BOOL}
_FLOAT = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


@dataclass(frozen=True)
class InputInfo:
    """A graph input as the presets see it: dims are ``int`` (static), ``str`` (symbolic) or ``None``."""

    name: str
    elem_type: int
    dims: tuple[int | str | None, ...]

    @property
    def dtype(self) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(self.elem_type).name if self.elem_type else "?"


@dataclass
class Selection:
    """What a preset picked: the axis requests, the common static size of each symbol, and notes."""

    preset: str
    axes: list[tuple[str, int, str]] = field(default_factory=list)
    sizes: dict[str, int | None] = field(default_factory=dict)  # None: every dim already carries the symbol
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        by_sym: dict[str, list[str]] = {}
        for name, axis, sym in self.axes:
            by_sym.setdefault(sym, []).append(f"{name}:{axis}")
        parts = [f"{', '.join(where)} = {sym} " + (f"(exported {self.sizes[sym]})" if self.sizes.get(sym)
                                                    else "(already symbolic)") for sym, where in by_sym.items()]
        return f"--dynamic-{self.preset}: " + "; ".join(parts) + "".join(f" [{n}]" for n in self.notes)


def graph_inputs(model: onnx.ModelProto) -> list[InputInfo]:
    """The real inputs of ``model`` (initializers listed as inputs are left out)."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        out.append(InputInfo(vi.name, tt.elem_type, dims))
    return out


def _fmt(inp: InputInfo) -> str:
    return f"{inp.name} [{', '.join('?' if d is None else str(d) for d in inp.dims)}]"


def _one_size(preset: str, what: str, found: list[tuple[InputInfo, int]], symbol: str) -> Selection:
    """All ``found`` dims must share one static size (or already carry ``symbol``); else it is ambiguous."""
    sizes = {inp.dims[axis] for inp, axis in found if isinstance(inp.dims[axis], int)}
    if len(sizes) > 1:
        listing = "; ".join(f"{_fmt(inp)} axis {axis} = {inp.dims[axis]}" for inp, axis in found)
        raise UsageError(f"--dynamic-{preset} is ambiguous: the {what} differ between inputs ({listing}); "
                         "choose the axes with --axis NAME:AXIS=SYMBOL")
    sel = Selection(preset)
    sel.axes = [(inp.name, axis, symbol) for inp, axis in found]
    sel.sizes[symbol] = sizes.pop() if sizes else None
    return sel


def _check_not_named(preset: str, found: list[tuple[InputInfo, int]], symbol: str, sel: Selection) -> None:
    """Dims already symbolic under another name are left alone (and said so)."""
    for inp, axis in list(found):
        d = inp.dims[axis]
        if isinstance(d, str) and d != symbol:
            found.remove((inp, axis))
            sel.notes.append(f"{inp.name}:{axis} is already symbolic as {d!r}, left alone")
        elif d is None:
            found.remove((inp, axis))
            sel.notes.append(f"{inp.name}:{axis} has no size, left alone")


def select_batch(model: onnx.ModelProto) -> Selection:
    """Axis 0 of every input whose first dim equals the common batch value, symbol ``batch``."""
    inputs = [i for i in graph_inputs(model) if i.dims]
    found = [(i, 0) for i in inputs]
    skipped = Selection("batch")
    _check_not_named("batch", found, BATCH, skipped)
    if not found:
        raise UsageError("--dynamic-batch found no input with a batch axis; inputs are: "
                         f"{', '.join(_fmt(i) for i in graph_inputs(model)) or 'none'}")
    sel = _one_size("batch", "first dims", found, BATCH)
    sel.notes = skipped.notes
    return sel


def is_token_like(inp: InputInfo) -> bool:
    """A 2-D integer (or bool mask) input named like token ids or a mask."""
    name = inp.name.lower()
    named = name in TOKEN_NAMES or "ids" in name or "mask" in name
    return named and len(inp.dims) == 2 and inp.elem_type in _INTEGER


def select_seq(model: onnx.ModelProto) -> Selection:
    """Axis 1 of the 2-D integer token-like inputs, symbol ``sequence_length``."""
    found = [(i, 1) for i in graph_inputs(model) if is_token_like(i)]
    skipped = Selection("seq")
    _check_not_named("seq", found, SEQ, skipped)
    if not found:
        raise UsageError("--dynamic-seq found no token-like input (2-D integer input named input_ids, "
                         "attention_mask, token_type_ids, position_ids or containing 'ids'/'mask'); inputs are: "
                         f"{', '.join(_fmt(i) for i in graph_inputs(model)) or 'none'}")
    sel = _one_size("seq", "sequence lengths", found, SEQ)
    sel.notes = skipped.notes
    return sel


def is_image_like(inp: InputInfo) -> bool:
    """A 4-D floating-point input (read as NCHW)."""
    return len(inp.dims) == 4 and inp.elem_type in _FLOAT


def select_image(model: onnx.ModelProto) -> Selection:
    """Axes 2 and 3 (H and W of NCHW) of the 4-D float inputs, symbols ``height`` and ``width``."""
    images = [i for i in graph_inputs(model) if is_image_like(i)]
    if not images:
        raise UsageError("--dynamic-image found no 4-D floating-point input; inputs are: "
                         f"{', '.join(_fmt(i) for i in graph_inputs(model)) or 'none'}")
    for i in images:
        c, w = i.dims[1], i.dims[3]
        if isinstance(c, int) and isinstance(w, int) and w in (1, 3, 4) and c > w:
            raise UsageError(f"--dynamic-image: {_fmt(i)} looks channels-last (NHWC), the preset reads NCHW; "
                             "choose the axes with --axis NAME:AXIS=SYMBOL")
    skipped = Selection("image")
    hs = [(i, 2) for i in images]
    ws = [(i, 3) for i in images]
    _check_not_named("image", hs, HEIGHT, skipped)
    _check_not_named("image", ws, WIDTH, skipped)
    if not hs and not ws:
        raise UsageError(f"--dynamic-image: nothing left to select ({'; '.join(skipped.notes)})")
    sel = Selection("image", notes=skipped.notes)
    for found, sym, what in ((hs, HEIGHT, "heights"), (ws, WIDTH, "widths")):
        if found:
            part = _one_size("image", what, found, sym)
            sel.axes += part.axes
            sel.sizes.update(part.sizes)
    return sel


PRESETS = {"batch": select_batch, "seq": select_seq, "image": select_image}


def select(model: onnx.ModelProto, presets: list[str] | tuple[str, ...]) -> list[Selection]:
    """Run the named presets (``batch``, ``seq``, ``image``) in that order."""
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise UsageError(f"unknown preset(s) {unknown}; presets are {list(PRESETS)}")
    return [PRESETS[p](model) for p in presets]
