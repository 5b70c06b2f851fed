"""Load and save models: clear errors for unreadable files, atomic writes, external data kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model

from .errors import UsageError

_TWO_GB = 2**31 - 1


def load(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model with its external data; a missing or corrupt file is a usage error."""
    return read(path)[0]


def read(path: str | os.PathLike) -> tuple[onnx.ModelProto, bool]:
    """Like :func:`load`, also telling whether the weights lived in external data files."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        if external:
            load_external_data_for_model(model, str(p.parent))
    except (DecodeError, OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot read {p} as an ONNX model: {reason}") from None
    if not model.graph.node and not model.graph.input:
        raise UsageError(f"cannot read {p} as an ONNX model: it holds no graph")
    return model, external


def save(model: onnx.ModelProto, path: str | os.PathLike, external: bool = False) -> None:
    """Write ``model`` atomically: into a temporary directory beside ``path``, then rename into place.

    Weights go to ``<name>.data`` beside the model when ``external`` is set or the model exceeds 2 GB.
    """
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    external = external or model.ByteSize() > _TWO_GB
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        tmp_model = Path(tmp) / out.name
        if external:
            data_name = f"{out.name}.data"
            onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            os.replace(Path(tmp) / data_name, out.parent / data_name)
        else:
            onnx.save_model(model, str(tmp_model))
        os.replace(tmp_model, out)
