"""Where an ONNX file keeps its weights: the byte ranges of its initializers' ``raw_data``, read from the
protobuf wire format without parsing the model, and a view of the model that points onnxruntime at them.

onnxruntime builds a session from a file with weights inline by copying them out of the parsed protobuf
(for BERT-base 0.4-1.5 s, the first build of a process the slowest while its heap grows); a view whose
large initializers are external references into the same file is built in about 0.2 s, reading the bytes
from the page cache, and gives the same outputs."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import onnx

VIEW_BYTES = 4096  # inline initializers from this size are referenced in the file, smaller ones kept
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_NAME, _TENSOR_RAW_DATA = 7, 5, 8, 9  # onnx.proto field numbers
_PACKED = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
           if hasattr(onnx.TensorProto, n)}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5  # protobuf wire types


def _varint(b: mmap.mmap, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return value, i


def _fields(b: mmap.mmap, i: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of the message at ``b[i:end]``."""
    while i < end:
        key, i = _varint(b, i)
        field, kind = key >> 3, key & 7
        if kind == _VARINT:
            _, j = _varint(b, i)
        elif kind == _LENGTH:
            n, i = _varint(b, i)
            j = i + n
        elif kind in (_FIXED64, _FIXED32):
            j = i + (8 if kind == _FIXED64 else 4)
        else:
            raise ValueError(f"unexpected wire type {kind}")
        if j > end:
            raise ValueError("a field runs past its message")
        yield field, kind, i, j
        i = j


def raw_data_ranges(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``{initializer name: (offset, length)}`` of the main graph's initializers stored as ``raw_data`` in
    the file. A name given twice is left out; a file that is not a well-formed model raises ValueError."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return {}
        b = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        found: dict[str, tuple[int, int]] = {}
        twice: set[str] = set()
        for field, kind, start, end in _fields(b, 0, len(b)):
            if field != _MODEL_GRAPH or kind != _LENGTH:
                continue
            for g_field, g_kind, g_start, g_end in _fields(b, start, end):
                if g_field != _GRAPH_INITIALIZER or g_kind != _LENGTH:
                    continue
                name, raw = None, None
                for t_field, t_kind, t_start, t_end in _fields(b, g_start, g_end):
                    if t_field == _TENSOR_NAME and t_kind == _LENGTH:
                        name = b[t_start:t_end].decode("utf-8")
                    elif t_field == _TENSOR_RAW_DATA and t_kind == _LENGTH:
                        raw = (t_start, t_end - t_start)
                if name is not None and raw is not None:
                    if name in found:
                        twice.add(name)
                    found[name] = raw
        return {k: v for k, v in found.items() if k not in twice}
    except IndexError:
        raise ValueError("the file ends inside a field") from None
    finally:
        b.close()


def _copy_field(dst, field, value) -> None:
    if hasattr(value, "extend"):  # repeated
        getattr(dst, field.name).extend(value)
    elif field.message_type is not None:
        getattr(dst, field.name).CopyFrom(value)
    else:
        setattr(dst, field.name, value)


def file_view(model: onnx.ModelProto, path: str | os.PathLike) -> bytes | None:
    """``model`` serialised with each inline initializer of at least :data:`VIEW_BYTES` replaced by an
    external reference to its bytes in ``path``, the file ``model`` was read from or written to (load the
    view with ``path``'s folder as the external data folder). None when there is nothing to point at, or
    the file does not hold the model's initializers at the sizes the model gives them."""
    try:
        ranges = raw_data_ranges(path)
    except (OSError, ValueError):
        return None
    view = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(view, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(view.graph, field, value)
    location, pointed = Path(path).name, 0
    for t in model.graph.initializer:
        at = ranges.get(t.name)
        if at is None or at[1] < VIEW_BYTES or not t.HasField("raw_data") or at[1] != _raw_size(t):
            view.graph.initializer.append(t)
            continue
        ref = view.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims,
                                         data_location=onnx.TensorProto.EXTERNAL)
        for key, val in (("location", location), ("offset", str(at[0])), ("length", str(at[1]))):
            ref.external_data.add(key=key, value=val)
        pointed += 1
    return view.SerializeToString() if pointed else None


def _raw_size(t: onnx.TensorProto) -> int:
    """Bytes of ``t``'s raw_data by its dims and type; -1 for strings and types packed below a byte."""
    if t.data_type == onnx.TensorProto.STRING or t.data_type in _PACKED:
        return -1
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return -1
    n = 1
    for d in t.dims:
        n *= d
    return n * itemsize
