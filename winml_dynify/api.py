"""The Python API: ``dynify`` runs load -> select axes -> rewrite -> re-check -> verify."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx

from . import io, value_info
from .budget import over_budget
from .conform import checker_problem, conform, light_copy
from .context import Analysis, Binding, all_nodes
from .errors import RefusedError, UsageError, VerificationError
from .evidence import Evidence, tensor_shapes
from .presets import Selection, select
from .realize import CHECK_PREFIX
from .rewrite import RANGE_KEY, Rewritten, SymbolRange, analyse_request, name_nodes, pending_sites, rewrite
from .spec import AxisSpec, OutputAxis, carried_axes, check_outputs, graph_output_dims, parse_axis, resolve
from .verify import Check, Verifier, VerifyReport, check_shapes, size_like_scalars

AxisRequest = str | tuple[str, int, str]


@dataclass
class DynifyResult:
    """What a run produced: the model, its symbols and ranges, the rewrites and the parity report."""

    model: onnx.ModelProto
    axes: list[AxisSpec]
    ranges: dict[str, SymbolRange]
    rewrites: list[dict]
    outputs: dict[str, list[int | str | None]]
    report: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)
    selections: list[Selection] = field(default_factory=list)  # what each requested preset picked

    @property
    def verified(self) -> bool:
        return self.report is not None and self.report.ok

    def as_dict(self) -> dict:
        return {
            "axes": [{"input": a.input, "axis": a.axis, "symbol": a.symbol} for a in self.axes],
            "symbols": {s: {"static": r.static, "min": r.min, "max": r.max, "multiple": r.multiple,
                            "reason": r.reason} | r.extras()
                        for s, r in self.ranges.items()},
            "outputs": self.outputs,
            "rewrites": self.rewrites,
            "verification": self.report.as_dict() if self.report else None,
            "notes": self.notes,
        }


def _requests(axes: Sequence[AxisRequest]) -> list[tuple[str, int, str]]:
    return [parse_axis(a) if isinstance(a, str) else (a[0], int(a[1]), a[2]) for a in axes]


def dynify(model: onnx.ModelProto | str | os.PathLike, axes: Sequence[AxisRequest], *, verify: bool = True,
           shapes: dict[str, list[int]] | None = None, references: Sequence[str] = (),
           provider: str = "CPUExecutionProvider", opt_levels: Sequence[str] = ("disabled", "all"),
           seed: int = 0, progress: Callable[[int, int], None] | None = None,
           presets: Sequence[str] = (), expect_outputs: Sequence[OutputAxis] = (),
           inplace: bool = False, data_dir: str | os.PathLike | None = None,
           source: str | os.PathLike | None = None,
           stage: Callable[[onnx.ModelProto], str | os.PathLike] | None = None,
           maxima: dict[str, int] | None = None) -> DynifyResult:
    """Make ``axes`` of ``model`` symbolic, rewrite what depended on them and check parity.

    ``presets`` (``"batch"``, ``"seq"``, ``"image"``) add the axes :mod:`winml_dynify.presets` selects;
    ``expect_outputs`` are output dims a ``dynamic_axes`` dict declares, checked against the derived ones
    before verification. Raises :class:`UsageError` for bad requests, :class:`RefusedError` when the model
    cannot be made dynamic soundly. Verification failures are reported in ``result.report``
    (``result.verified``).

    Without verification the rewrite works on the model itself, copying no weight, when ``model`` is a
    path or ``inplace`` is set (the given ModelProto then becomes ``result.model``); verification needs
    the original, so it always rewrites a copy. ``data_dir`` is the folder of the external data files of
    a model read without its weights (``io.read(path, weights=False)``; save the result with ``io.save``).
    ``source`` is the file a ModelProto ``model`` was read from, unchanged: verification builds the
    original's onnxruntime sessions from it. ``stage`` writes the rewritten model to a file before it is
    verified and returns the path (e.g. ``io.Staged.write``): the rewritten model's sessions are then built
    from that file, and the model is serialised once for both (the CLI stages its output so).
    ``maxima`` are the largest sizes symbols take (``{"seq": 512}``): their range, and the size
    position-only computations are tabulated at (:mod:`winml_dynify.rules.tables`).
    """
    if not isinstance(model, onnx.ModelProto):
        source = model
    with io.external_dir(data_dir):
        return _dynify(model, axes, verify, shapes, references, provider, opt_levels, seed, progress, presets,
                       expect_outputs, inplace, data_dir, None if source is None else str(source), stage,
                       dict(maxima or {}))


def _dynify(model, axes, verify, shapes, references, provider, opt_levels, seed, progress, presets,
            expect_outputs, inplace, data_dir, source, stage, maxima) -> DynifyResult:
    owned = inplace or not isinstance(model, onnx.ModelProto)
    original = model if isinstance(model, onnx.ModelProto) else io.load(model)
    selections = select(original, list(presets))
    axes = [*axes, *(a for sel in selections for a in sel.axes)]
    if not axes:
        raise UsageError("no axes requested: give at least one --axis NAME:AXIS=SYMBOL")
    specs, statics = resolve(original, _requests(axes))
    if not specs:
        check_outputs(list(expect_outputs), graph_output_dims(original))
        return DynifyResult(original, [], {}, [], {}, None, ["every requested dim already has its symbol"],
                            selections)
    recorded = recorded_ranges(original)
    carried, carried_sizes = carried_axes(original, {**{s: r.static for s, r in recorded.items()}, **statics})
    specs = specs + [c for c in carried if c not in specs]
    statics = {**carried_sizes, **statics}
    in_place = owned and not verify
    before = light_copy(original) if in_place else original  # what the checker compares with
    _check_maxima(maxima, statics)
    evidence = tensor_shapes(list(references), original.graph) if references else None
    done = rewrite(original, specs, statics, inplace=in_place, maxima=maxima, evidence=evidence)
    _keep_recorded(done.ranges, recorded, {c.symbol for c in carried})
    analysed = _self_check(done.model, specs, statics, done.ranges, done.choices, before, evidence)
    _record_metadata(done.model, done.ranges)
    conform(before, done.model)
    known = value_info.analysed_shapes(analysed.infos, analysed.symbols)
    value_info.annotate(done.model, {k: v for k, v in known.items() if not k.startswith(CHECK_PREFIX)})
    problem = checker_problem(done.model)
    if problem and not checker_problem(before):
        raise RefusedError(f"the rewritten model fails onnx.checker (full check) although the input passes: "
                           f"{problem}")
    result = DynifyResult(done.model, specs, done.ranges, done.rewrites, done.outputs, notes=list(done.notes),
                          selections=selections)
    check_outputs(list(expect_outputs), result.outputs)
    if verify:
        unknown = [s for s in (shapes or {}) if s not in statics]
        if unknown:
            raise UsageError(f"--check-shapes names unknown symbols {unknown}; symbols are {list(statics)}")
        staged = None if stage is None else str(stage(done.model))
        result.report = _verify(original, done, specs, statics, shapes, references, provider, seed,
                                list(opt_levels), progress, None if data_dir is None else str(data_dir), source,
                                staged)
        axis0 = {s.symbol for s in specs if s.axis == 0}
        result.report.checks += size_like_scalars(done.model, statics, result.report, axis0)
    return result


RANDOM_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial", "Bernoulli"}


def _verify(original: onnx.ModelProto, done: Rewritten, specs: list[AxisSpec], statics: dict[str, int],
            shapes: dict[str, list[int]] | None, references: Sequence[str], provider: str, seed: int,
            levels: list[str], progress: Callable[[int, int], None] | None,
            data_dir: str | None = None, source: str | None = None, staged: str | None = None) -> VerifyReport:
    """Run the parity checks that fit the memory budget (the others are reported unverified). An input
    model onnxruntime cannot run, or one that draws random numbers, is a usage error (``--no-check`` skips
    verification). ``staged``: the rewritten model's file, when it was written before verification."""
    drawn = next((n for n in all_nodes(original.graph) if n.op_type in RANDOM_OPS and n.domain in ("", "ai.onnx")),
                 None)
    if drawn is not None:
        raise UsageError(f"node {drawn.name or drawn.output[0]!r} ({drawn.op_type}) draws random numbers: the "
                         "model's outputs differ from run to run, so no parity check can hold; --no-check skips "
                         "verification")
    too_big = over_budget(original, specs, statics)
    if too_big:
        return VerifyReport([Check("original", dict(statics), "-", "unverified", note=f"exported shape: {too_big}")],
                            provider)
    try:
        v = Verifier(original, done.model, specs, done.outputs, provider, seed, done.ranges, data_dir, source,
                     staged)
        v.session("original", "disabled")
    except Exception as e:  # onnxruntime's exception types vary by version
        if type(e).__module__.startswith("onnxruntime"):
            raise UsageError(f"onnxruntime cannot run the input model on generated inputs ({_line(e)}); "
                             "--no-check skips verification") from None
        raise VerificationError(f"the checks could not be prepared ({type(e).__name__}: {_line(e)})") from None
    plan, skipped = [], []
    for shape in check_shapes(done.ranges, v.roles, shapes):
        (skipped if over_budget(original, specs, shape) else plan).append(shape)
    try:
        report = v.run(plan, levels, list(references), progress)
    except Exception as e:  # a check that cannot run is no pass: nothing is written
        raise VerificationError(f"the checks could not run ({type(e).__name__}: {_line(e)})") from None
    report.checks += [Check("runs", shape, level, "unverified", note=over_budget(original, specs, shape))
                      for shape in skipped for level in levels]
    return report


def _check_maxima(maxima: dict[str, int], statics: dict[str, int]) -> None:
    for s, top in maxima.items():
        if s not in statics:
            raise UsageError(f"--max {s}={top}: unknown symbol; symbols are {list(statics)}")
        if not isinstance(top, int) or top < statics[s]:
            raise UsageError(f"--max {s}={top}: below the exported size {statics[s]}")


def _line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def recorded_ranges(model: onnx.ModelProto) -> dict[str, SymbolRange]:
    """The symbol ranges a previous run stored in ``metadata_props`` (empty when none or malformed)."""
    props = {p.key: p.value for p in model.metadata_props}
    try:
        stored = json.loads(props.get(RANGE_KEY, "{}"))
        return {s: SymbolRange(s, int(r["static"]), int(r.get("min") or 1),
                               None if r.get("max") is None else int(r["max"]),
                               f"recorded in {RANGE_KEY}", int(r.get("multiple") or 1))
                for s, r in stored.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _keep_recorded(ranges: dict[str, SymbolRange], recorded: dict[str, SymbolRange], carried: set[str]) -> None:
    """A symbol carried from a previous run keeps the range that run derived (a position table it read
    may now sit behind a run-time computation the analysis no longer bounds)."""
    for s in carried & set(recorded) & set(ranges):
        r, old = ranges[s], recorded[s]
        r.static = old.static
        r.min = max(r.min, old.min)
        r.multiple = max(r.multiple, old.multiple)
        if old.max is not None and (r.max is None or old.max < r.max):
            r.max, r.reason = old.max, old.reason


def _self_check(model: onnx.ModelProto, specs: list[AxisSpec], statics: dict[str, int],
                ranges: dict[str, SymbolRange], choices: dict[tuple[str, int], Binding],
                original: onnx.ModelProto, evidence: Evidence | None = None) -> Analysis:
    """The rewritten graph must analyse (under the same Reshape choices and reference evidence) with nothing
    left to bind or rewrite, and onnx must infer it strictly; returns that analysis. Works on ``model``
    itself (node names are restored after), and infers shapes on a copy without the weights: no weight is
    copied. When strict inference fails on the ``original`` too, the input is at fault, and the error says so."""
    names = [n.name for n in all_nodes(model.graph)]
    name_nodes(model.graph)
    try:
        multiples = {s: r.multiple for s, r in ranges.items() if r.multiple > 1}
        an = analyse_request(model, specs, statics, multiples, choices, evidence)
        pending = pending_sites(model, an)
    finally:
        for n, name in zip(all_nodes(model.graph), names, strict=True):
            n.name = name
    inputs = {vi.name: vi.type.tensor_type.shape.dim for vi in model.graph.input}
    leftover = [f"{s.input}:{s.axis} is not the symbol {s.symbol!r}" for s in specs
                if inputs[s.input][s.axis].dim_param != s.symbol]
    leftover += [o.describe() for o in an.bindings if o.kind != "choice"]  # a revised Reshape choice is fine
    leftover += an.conflicts + pending
    if leftover:
        raise RefusedError(f"the rewritten graph is still inconsistent: {leftover[0]}")
    light = value_info.shapes_only(model)
    values = {s: _inside(r.static + r.multiple, r) for s, r in ranges.items() if r.equals is None}
    values |= {s: r.equals.evaluate(values) for s, r in ranges.items() if r.equals is not None}
    for vi in light.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in values:
                value = values[d.dim_param]
                d.Clear()
                d.dim_value = value
    reason = _strict_inference_problem(light)
    if reason is None:
        return an
    own = _strict_inference_problem(value_info.shapes_only(original))
    if own is not None:
        raise UsageError(f"the input model itself fails onnx's strict type and shape inference ({own}): "
                         "it is not a valid model; fix it first (e.g. re-run the converter that wrote it)")
    raise RefusedError(f"onnx shape inference rejects the rewritten graph: {reason}")


def _strict_inference_problem(model: onnx.ModelProto) -> str | None:
    """The first line of onnx's strict type and shape inference error on ``model``, or None."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises InferenceError and friends
        return " ".join(str(e).split())[:300]
    return None


def _inside(value: int, r: SymbolRange) -> int:
    """``value`` if the symbol's range allows it, else another allowed size (not the exported one if possible)."""
    if r.max is not None and value > r.max:
        value = r.max if r.max != r.static else max(r.min, r.static - 3)
    return max(r.min, value - value % r.multiple)


def _record_metadata(model: onnx.ModelProto, ranges: dict[str, SymbolRange]) -> None:
    """Store the symbol ranges; keep winml.io.* specs true (symbolic dims, ranges)."""
    props = {p.key: p for p in model.metadata_props}
    value = json.dumps({s: {"min": r.min, "max": r.max, "multiple": r.multiple, "static": r.static} | r.extras()
                        for s, r in ranges.items()})
    if RANGE_KEY in props:
        props[RANGE_KEY].value = value
    else:
        model.metadata_props.add(key=RANGE_KEY, value=value)
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(model.graph.input) + list(model.graph.output)}
    for key in ("winml.io.inputs", "winml.io.outputs"):
        if key not in props:
            continue
        try:
            specs = json.loads(props[key].value)
        except ValueError:
            continue
        for s in specs if isinstance(specs, list) else []:
            if isinstance(s, dict) and s.get("name") in dims and ("shape" in s or key == "winml.io.inputs"):
                s["shape"] = dims[s["name"]]
        props[key].value = json.dumps(specs)
