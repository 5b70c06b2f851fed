"""Load and save models: clear errors for unreadable files, atomic writes, external data kept.

A model whose weights live in external data files can be read without them (``weights=False``): only
tensors of up to :data:`INLINE_BYTES` are read (the shape constants the rules inspect); the others keep
their references, are read on demand by :func:`tensor_array` (under :func:`external_dir`), and on save
the output gets its own copy of the data files (a copy-on-write clone where the filesystem allows).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model, load_external_data_for_tensor

from .errors import UsageError

MIN_IR_VERSION = 3  # the first IR version with opset imports
MIN_OPSET = 7  # the oldest default-domain opset onnxruntime has kernels for
_INLINE_LIMIT = 2**31 - 1 - (64 << 20)  # tensor bytes above which a model is saved with external data
INLINE_BYTES = 64 * 1024  # external tensors up to this size are read into the graph by read(weights=False)
_FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write
_DATA_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("external_data_dir", default=None)


def load(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model with its external data; a missing or corrupt file is a usage error."""
    return read(path)[0]


def read(path: str | os.PathLike, weights: bool = True) -> tuple[onnx.ModelProto, bool]:
    """Like :func:`load`, also telling whether the weights lived in external data files.

    With ``weights=False`` the large external tensors are not read: run the rewrite under
    :func:`external_dir` (``path``'s folder) and save with :func:`save`, which gives the output its own data.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
        external = any(_is_external(t) for t in _tensors(model.graph))
        if external and weights:
            load_external_data_for_model(model, str(p.parent))
        elif external:
            for t in _tensors(model.graph):
                if _is_external(t) and _nbytes(t) <= INLINE_BYTES:
                    load_external_data_for_tensor(t, str(p.parent))
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


def save(model: onnx.ModelProto, path: str | os.PathLike, external: bool = False,
         data_dir: str | os.PathLike | None = None) -> None:
    """Write ``model`` atomically (see :class:`Staged`)."""
    with Staged(path) as staged:
        staged.write(model, external, data_dir)
        staged.commit()


class Staged:
    """A model written into a temporary directory beside ``path`` (made on the first write), moved into
    place by :meth:`commit`; leaving the ``with`` block removes whatever was not committed. Between the
    two, :attr:`model_path` is a complete model (with its data) that onnxruntime can load.

    Weights go to ``<name>.data`` beside the model when ``external`` is set or the model exceeds 2 GB.
    Tensors still referring to external files (read with ``weights=False`` from ``data_dir``) keep them:
    the output references its own copy of each file (see :func:`_link_data`), size-checked.
    """

    def __init__(self, path: str | os.PathLike):
        self.out = Path(path).resolve()
        self.model_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._moves: list[tuple[Path, Path]] = []

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def write(self, model: onnx.ModelProto, external: bool = False,
              data_dir: str | os.PathLike | None = None) -> Path:
        """Stage ``model`` (pointing its external tensors at the output's data); returns :attr:`model_path`."""
        if self._tmp is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(dir=self.out.parent, prefix=f".{self.out.name}.")
        tmp = Path(self._tmp.name)
        tmp_model = tmp / self.out.name
        referenced = [t for t in _tensors(model.graph) if _is_external(t)]
        inline = sum(_nbytes(t) for t in _tensors(model.graph) if not _is_external(t))
        external = external or inline > _INLINE_LIMIT
        self._moves = _link_data(referenced, Path(data_dir or "."), self.out, tmp) if referenced else []
        if external and not referenced:
            data_name = f"{self.out.name}.data"
            onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            self._moves.append((tmp / data_name, self.out.parent / data_name))
        else:
            try:
                onnx.save_model(model, str(tmp_model))
            except ValueError:  # over 2 GB after all (the estimate counts tensor contents only)
                if referenced:
                    raise UsageError("the graph exceeds 2 GB even without its external weights") from None
                return self.write(model, True)
        self.model_path = tmp_model
        return tmp_model

    def commit(self) -> None:
        """Move the staged model and its data into place (the data first, the model last)."""
        if self.model_path is None:
            raise ValueError("nothing staged")
        for src, dst in self._moves:
            if dst.is_dir():
                shutil.rmtree(dst)
            os.replace(src, dst)
        os.replace(self.model_path, self.out)
        self.model_path = None


@contextlib.contextmanager
def external_dir(folder: str | os.PathLike | None) -> Iterator[None]:
    """Within the block, :func:`tensor_array` reads external tensors relative to ``folder``."""
    token = _DATA_DIR.set(str(folder) if folder is not None else None)
    try:
        yield
    finally:
        _DATA_DIR.reset(token)


def tensor_array(t: onnx.TensorProto) -> np.ndarray:
    """The content of ``t``, read from its external file (under :func:`external_dir`) if it has one."""
    if not _is_external(t):
        return numpy_helper.to_array(t)
    folder = _DATA_DIR.get()
    if folder is None:
        raise UsageError(f"tensor {t.name!r} lives in an external data file, and the model's folder is unknown")
    try:
        return numpy_helper.to_array(t, folder)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the external data of tensor {t.name!r}: {e}") from None


def _link_data(tensors: list[onnx.TensorProto], src_dir: Path, out: Path, tmp: Path) -> list[tuple[Path, Path]]:
    """Give the output its own copy of the external files ``tensors`` refer to, and point them at it.

    One file becomes ``<out name>.data``; several keep their names in the folder ``<out name>.data.d``.
    Each copy is a copy-on-write clone where the filesystem can make one, else a kernel-side file copy (no
    weight passes through Python memory); never a hard link, which onnx refuses as a possible attack.
    Returns the (staged, final) paths to move into place.
    """
    locations = sorted({_entry(t, "location") for t in tensors})
    single = len(locations) == 1
    final = out.parent / (f"{out.name}.data" if single else f"{out.name}.data.d")
    staged = tmp / final.name
    rel = {loc: final.name if single else f"{final.name}/{loc}" for loc in locations}
    sources = {(src_dir / loc).resolve() for loc in locations}
    if final.resolve() in sources or any(final.resolve() in s.parents for s in sources):
        raise UsageError(f"the output's data {final} would replace the input's own data; choose another -o")
    for loc in locations:
        src, dst = src_dir / loc, (staged if single else staged / loc)
        if not src.is_file():
            raise UsageError(f"external data file not found: {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        _clone_or_copy(src, dst)
        if dst.stat().st_size != src.stat().st_size:
            raise UsageError(f"copying {src} to {dst} wrote {dst.stat().st_size} of {src.stat().st_size} bytes")
    for t in tensors:
        size = (staged if single else staged / _entry(t, "location")).stat().st_size
        end = int(_entry(t, "offset") or 0) + int(_entry(t, "length") or _nbytes(t))
        if end > size:
            raise UsageError(f"tensor {t.name!r} reaches byte {end} of its {size}-byte data file "
                             f"{_entry(t, 'location')}")
        for e in t.external_data:
            if e.key == "location":
                e.value = rel[e.value]
    return [(staged, final)]


def _clone_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src``: a reflink clone (FICLONE: btrfs, XFS, ...) when possible."""
    try:
        import fcntl

        with open(src, "rb") as a, open(dst, "wb") as b:
            fcntl.ioctl(b.fileno(), _FICLONE, a.fileno())
        return
    except (ImportError, OSError):
        pass
    shutil.copyfile(src, dst)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of ``graph`` and of its subgraphs."""
    yield from graph.initializer
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def weight_bytes(model: onnx.ModelProto) -> tuple[int, int]:
    """Bytes of ``model``'s weights: (held in the graph, in external data files)."""
    inline = external = 0
    for t in _tensors(model.graph):
        if _is_external(t):
            external += _nbytes(t)
        else:
            inline += t.ByteSize()
    return inline, external


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def _entry(t: onnx.TensorProto, key: str) -> str | None:
    return next((e.value for e in t.external_data if e.key == key), None)


def _nbytes(t: onnx.TensorProto) -> int:
    """Bytes of ``t``'s content as stored (length entry, else element count times element size)."""
    length = _entry(t, "length")
    if length is not None:
        return int(length)
    size = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * size
