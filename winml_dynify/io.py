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
MIN_IR_VERSION = 3  # the first IR version with opset imports
MIN_OPSET = 7  # the oldest default-domain opset onnxruntime has kernels for


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
    validate(model, p)
    return model, external


def validate(model: onnx.ModelProto, path: Path) -> None:
    """Refuse (usage error) what no later step can handle: an IR version or a default-domain opset outside
    the range onnx and onnxruntime support, graph inputs defined twice, negative dims."""
    if not MIN_IR_VERSION <= model.ir_version <= onnx.IR_VERSION:
        raise UsageError(f"{path}: IR version {model.ir_version} is not supported (onnx {onnx.__version__} reads "
                         f"IR versions {MIN_IR_VERSION} to {onnx.IR_VERSION})")
    top = onnx.defs.onnx_opset_version()
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and not MIN_OPSET <= op.version <= top:
            raise UsageError(f"{path}: default-domain opset {op.version} is not supported (supported: "
                             f"{MIN_OPSET}, the oldest onnxruntime has kernels for, to {top}, the newest onnx "
                             f"{onnx.__version__} knows; onnx.version_converter converts between opsets)")
    names = [vi.name for vi in model.graph.input]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{path}: graph input {twice[0]!r} is defined more than once")
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        bad = [d.dim_value for d in dims if d.HasField("dim_value") and d.dim_value < 0]
        if bad:
            raise UsageError(f"{path}: {vi.name!r} has a negative dim ({bad[0]}); dims are sizes >= 0 or names")


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
