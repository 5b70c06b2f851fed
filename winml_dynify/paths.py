"""Every file a run reads and writes, checked against each other before anything is written.

No output may be an input (the model, its external data files, its sidecar, a ``--reference`` export, the
``--axes-json`` file) or another output, whatever the spelling: symbolic and hard links are compared with
``os.path.samefile``. Missing parent folders are created at write time; the nearest existing one must be a
writable folder. Text outputs are written atomically (a temporary file beside the target, then rename).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from .errors import OutputError, UsageError
from .sidecar import sidecar_path


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def external_files(model_path: Path) -> list[Path]:
    """The external data files a model's initializers point to (read without loading the weights)."""
    model = onnx.load(str(model_path), load_external_data=False)
    out: list[Path] = []
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            where = next((e.value for e in t.external_data if e.key == "location"), None)
            if where and (p := model_path.parent / where) not in out:
                out.append(p)
    return out


def model_reads(model_path: Path, external: bool) -> dict[str, Path]:
    """The files reading ``model_path`` touches: the model, its external data and its sidecar."""
    reads = {"input model": model_path}
    for k, p in enumerate(external_files(model_path) if external else []):
        reads[f"input external data file {k + 1}"] = p
    if sidecar_path(model_path).is_file():
        reads["input sidecar"] = sidecar_path(model_path)
    return reads


def model_writes(out: Path) -> dict[str, Path]:
    """What saving a model to ``out`` may write: the model and its external data (``OUT.data``, or the
    folder ``OUT.data.d`` for several data files)."""
    return {"output model (-o)": out, "output external data": out.with_name(f"{out.name}.data"),
            "output external data folder": out.with_name(f"{out.name}.data.d")}


def _writable_folder(p: Path, label: str) -> None:
    parent = p.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{label} {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{label} {p}: permission denied writing into {parent}")


def check(writes: dict[str, Path], reads: dict[str, Path]) -> None:
    """Refuse (usage error) any output that is a folder, an input or another output; an unwritable
    folder is an I/O error. Runs before anything is written."""
    items = list(writes.items())
    for k, (label, p) in enumerate(items):
        if p.is_dir():
            raise UsageError(f"{label} {p} is a folder; give a file path")
        for rlabel, q in reads.items():
            if _same(p, q):
                raise UsageError(f"{label} {p} is the {rlabel}; choose another path")
        for olabel, q in items[:k]:
            if _same(p, q):
                raise UsageError(f"{label} {p} is also the {olabel}; choose another path")
        _writable_folder(p, label)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: a temporary file in the target's folder, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
