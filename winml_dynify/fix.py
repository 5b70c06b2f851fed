"""Fix symbols back to sizes: the static form the QNN/HTP path expects, from a dynified model.

The symbols are fixed with onnxruntime's own ``make_dim_param_fixed``; onnx-graphsurgeon's constant
folding then folds the run-time shape computations back into constants. Node ``metadata_props`` and
``doc_string`` (which graphsurgeon drops) are restored by node name.
"""

from __future__ import annotations

import json

import onnx
import onnx_graphsurgeon as gs
from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

from .errors import UsageError
from .rewrite import RANGE_KEY


def check_ranges(model: onnx.ModelProto, values: dict[str, int]) -> None:
    """Each size must lie in the symbol's range stored under ``winml.dynify.symbol_ranges`` (a usage error
    otherwise, naming the symbol, the size and the range)."""
    props = {p.key: p.value for p in model.metadata_props}
    try:
        ranges = json.loads(props.get(RANGE_KEY, "{}"))
    except ValueError:
        raise UsageError(f"the model's {RANGE_KEY} metadata is not JSON; --force skips the range check") from None
    for name, value in values.items():
        r = ranges.get(name) if isinstance(ranges, dict) else None
        if not isinstance(r, dict):
            continue
        low, high, step = r.get("min") or 1, r.get("max"), r.get("multiple") or 1
        if value < low or (high is not None and value > high) or value % step:
            shown = f"[{low}, {high if high is not None else 'inf'}]" + (f", multiples of {step}" if step > 1 else "")
            raise UsageError(f"{name}={value} is outside the range the model records for {name} ({shown}, "
                             f"{RANGE_KEY}); --force fixes it anyway")


def fix_dims(model: onnx.ModelProto, values: dict[str, int], force: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with every ``dim_param`` in ``values`` fixed and its shape subgraphs folded.

    Sizes outside the recorded symbol ranges are refused unless ``force``."""
    params = {d.dim_param for vi in list(model.graph.input) + list(model.graph.output)
              for d in vi.type.tensor_type.shape.dim if d.HasField("dim_param")}
    unknown = sorted(set(values) - params)
    if unknown:
        raise UsageError(f"unknown symbols {unknown}; the model's symbols are {sorted(params)}")
    if not force:
        check_ranges(model, values)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for name, value in values.items():
        if value < 1:
            raise UsageError(f"{name}={value}: sizes must be >= 1")
        make_dim_param_fixed(fixed.graph, name, value)
    fix_output_shapes(fixed)
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(fixed, data_prop=True))
    graph.fold_constants().cleanup().toposort()
    folded = gs.export_onnx(graph)
    folded.ir_version = model.ir_version
    del folded.graph.value_info[:]
    kept = {n.name: n for n in model.graph.node if n.name}
    for n in folded.graph.node:
        src = kept.get(n.name)
        if src is not None:
            n.metadata_props.extend(src.metadata_props)
            n.doc_string = src.doc_string
    del folded.metadata_props[:]
    folded.metadata_props.extend(model.metadata_props)
    return folded
