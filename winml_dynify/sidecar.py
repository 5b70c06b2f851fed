"""The ``<model>_htp_metadata.json`` sidecar that ``winml export`` writes beside a model, kept true.

The dynified model gets its own sidecar (``<output stem>_htp_metadata.json``) that describes it exactly:
``nodes`` names only nodes of the written model (entries for nodes it lacks are dropped, also those already
stale in the input's sidecar) and gains the nodes the rewrite added (tagged like the node they serve);
``statistics`` and the export report's ``node_tagging`` counts are those of the written model (node count,
nodes that carry a ``winml.hierarchy.tag``, coverage, nodes per tag); input/output specs show the symbolic
dims, the model and sidecar paths under ``outputs`` follow the new
names, and a ``winml_dynify`` entry records the symbols and their ranges. Every other key is carried over
untouched.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections import Counter, deque
from pathlib import Path

import onnx

from .errors import UsageError

SUFFIX = "_htp_metadata.json"
TAG_KEY = "winml.hierarchy.tag"
DEPTH_KEY = "winml.hierarchy.depth"


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``dir/model.onnx`` -> ``dir/model_htp_metadata.json``."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}{SUFFIX}")


def read(model_path: str | os.PathLike) -> dict | None:
    """The sidecar beside ``model_path``, or None when there is none. A malformed one is a usage error."""
    p = sidecar_path(model_path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the sidecar {p}: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"cannot read the sidecar {p}: expected a JSON object")
    return data


def node_tag(node: onnx.NodeProto) -> str:
    return next((p.value for p in node.metadata_props if p.key == TAG_KEY), "")


def _io_dims(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in [*(v for v in model.graph.input if v.name not in inits), *model.graph.output]:
        if vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                            for d in vi.type.tensor_type.shape.dim]
    return out


def _set_shape(spec: object, dims: list[int | str | None] | None) -> None:
    if (isinstance(spec, dict) and dims is not None and isinstance(spec.get("shape"), list)
            and len(spec["shape"]) == len(dims)):
        spec["shape"] = [old if new is None else new for old, new in zip(spec["shape"], dims, strict=True)]


def _update_io_specs(obj: object, io: dict[str, list[int | str | None]]) -> None:
    """Under every ``inputs``/``outputs`` key: ``{name: {shape}}`` maps and ``[{name, shape}]`` lists."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("inputs", "outputs"):
                if isinstance(value, dict):
                    for name, spec in value.items():
                        _set_shape(spec, io.get(name))
                elif isinstance(value, list):
                    for spec in value:
                        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                            _set_shape(spec, io.get(spec["name"]))
            _update_io_specs(value, io)
    elif isinstance(obj, list):
        for item in obj:
            _update_io_specs(item, io)


def _root_tag(data: dict, tags: dict[str, str]) -> str:
    modules = data.get("modules")
    if isinstance(modules, dict) and isinstance(modules.get("traced_tag"), str) and modules["traced_tag"]:
        return modules["traced_tag"]
    known = [t for t in tags.values() if t]
    return min(known, key=lambda t: (t.count("/"), t)) if known else ""


def _served_tag(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], tags: dict[str, str]) -> str:
    """The tag of the nearest tagged node downstream of ``node`` (breadth first)."""
    queue, seen = deque([node]), {node.name}
    while queue:
        for out in queue.popleft().output:
            for c in consumers.get(out, []):
                if tags.get(c.name):
                    return tags[c.name]
                if c.name not in seen:
                    seen.add(c.name)
                    queue.append(c)
    return ""


def update(data: dict, original: onnx.ModelProto, dynified: onnx.ModelProto, *, source: Path | None = None,
           output: Path | None = None, ranges: dict | None = None) -> dict:
    """Return a copy of the sidecar ``data`` made true for ``dynified`` (rewritten from ``original``)."""
    data = copy.deepcopy(data)
    before = {n.name for n in original.graph.node if n.name}
    after = list(dynified.graph.node)
    after_names = {n.name for n in after if n.name}
    nodes = data.get("nodes") if isinstance(data.get("nodes"), dict) else None
    known = dict(nodes or {})
    tags = {n.name: node_tag(n) or known.get(n.name, "") for n in after if n.name}
    added = [n.name for n in after if n.name and n.name not in before]
    removed = sorted(before - after_names)
    root = _root_tag(data, tags)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in after:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in after}
    for name in added:
        if not tags[name]:
            tags[name] = _served_tag(by_name[name], consumers, tags) or root
    if nodes is not None:  # only nodes of the written model, even where the input's map was already stale
        for name in [k for k in nodes if k not in after_names]:
            del nodes[name]
        for name in added:
            if tags[name]:
                nodes[name] = tags[name]

    total = len(after)
    carried = [node_tag(n) for n in after if node_tag(n)]  # tags the written model's nodes actually carry
    tagged = len(carried)
    coverage = round(100.0 * tagged / total, 2) if total else 0.0
    _refresh(data.get("statistics"), {"onnx_nodes": total, "tagged_nodes": tagged, "empty_tags": total - tagged,
                                      "coverage_percentage": coverage})
    steps = data.get("report", {}).get("steps", {}) if isinstance(data.get("report"), dict) else {}
    tagging = steps.get("node_tagging") if isinstance(steps, dict) else None
    if isinstance(tagging, dict):
        per_tag = Counter(carried)
        _refresh(tagging, {"total_nodes": total, "tagged_nodes_count": tagged, "coverage_percentage": coverage,
                           "nodes_per_tag": dict(sorted(per_tag.items()))})
        _refresh(tagging.get("coverage"), {"percentage": coverage, "total_onnx_nodes": total, "tagged_nodes": tagged})
        _tagging_statistics(tagging, carried, root, {n.name for n in original.graph.node if node_tag(n)}
                            == {n.name for n in after if node_tag(n)})

    _update_io_specs(data, _io_dims(dynified))

    outputs = data.get("outputs")
    if isinstance(outputs, dict) and source is not None and output is not None:
        onnx_model = outputs.get("onnx_model")
        if isinstance(onnx_model, dict):
            renames = {source.stem: output.stem, source.name: output.name, str(source): str(output)}
            if onnx_model.get("path") in renames:
                onnx_model["path"] = renames[onnx_model["path"]]
            if "size_mb" in onnx_model and output.is_file():
                onnx_model["size_mb"] = round(output.stat().st_size / 2**20, 2)
        meta = outputs.get("metadata")
        if isinstance(meta, dict) and meta.get("path") == sidecar_path(source).name:
            meta["path"] = sidecar_path(output).name

    data["winml_dynify"] = {
        "source_model": source.name if source is not None else None,
        "symbols": ranges or {},
        "nodes_added": len(added),
        "nodes_removed": len(removed),
    }
    return data


def _tagging_statistics(tagging: dict, carried: list[str], root: str, same_nodes: bool) -> None:
    """``node_tagging.statistics``: root/scoped node and scope counts of the written model's tags; the
    counts of how the export matched each tag are kept only while the tagged nodes are the exported ones."""
    stats = tagging.get("statistics")
    if not isinstance(stats, dict):
        return
    _refresh(stats, {"root_nodes": sum(1 for t in carried if t == root),
                     "scoped_nodes": sum(1 for t in carried if t != root),
                     "unique_scopes": len({t for t in carried if t != root})})
    if not same_nodes:
        for key in [k for k in stats if k.endswith(("_matches", "_fallbacks"))]:
            del stats[key]


def _refresh(section: object, values: dict) -> None:
    """Set the ``values`` whose keys ``section`` already has (no key is added)."""
    if isinstance(section, dict):
        for key, value in values.items():
            if key in section:
                section[key] = value


def write(data: dict, path: str | os.PathLike, indent: int = 2) -> None:
    """Write ``data`` as JSON atomically: a temporary file beside ``path``, then rename into place."""
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _indent_of(path: Path) -> int:
    lines = path.read_text().splitlines()
    if len(lines) > 1:
        return max(1, len(lines[1]) - len(lines[1].lstrip(" ")))
    return 2


def target(source: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Where the output's sidecar goes; refuses a path that would overwrite the input's sidecar."""
    path = sidecar_path(output)
    if path.resolve() == sidecar_path(source).resolve():
        raise UsageError(f"the output's sidecar {path} would overwrite the input's; choose another -o")
    return path


def write_beside(source: str | os.PathLike, output: str | os.PathLike, original: onnx.ModelProto,
                 dynified: onnx.ModelProto, ranges: dict | None = None, data: dict | None = None) -> Path | None:
    """When ``source`` has a sidecar, write the updated one beside ``output``; return its path (or None).

    ``data`` is the source sidecar when already read (see :func:`read`).
    """
    source, output = Path(source), Path(output)
    data = read(source) if data is None else data
    if data is None:
        return None
    path = target(source, output)
    write(update(data, original, dynified, source=source, output=output, ranges=ranges), path,
          _indent_of(sidecar_path(source)) if sidecar_path(source).is_file() else 2)
    return path
