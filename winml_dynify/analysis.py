"""Data-flow analysis: which baked constants depend on the symbols, and what they must become.

Every tensor gets a shape of :class:`~winml_dynify.dims.Dim` (values at the sample points) and, for
small integer tensors, its value at every point. Propagation runs in topological order through the
op handlers of :mod:`winml_dynify.ops` (and :mod:`~winml_dynify.ops_onnx`, :mod:`~winml_dynify.ops_ort`,
:mod:`~winml_dynify.subgraphs`, which register in the same table). Where an op forces a static dim that
came from a constant (an axis of a folded tensor, or an entry of a shape-valued input) to equal a symbolic
dim, a *binding* is recorded; the pass is re-run with the bindings in effect until nothing new is bound.
What is left is the plan: the bindings (what each constant must become) and the conflicts (why it cannot).
"""

from __future__ import annotations

import numpy as np
import onnx

from . import ops_onnx, subgraphs  # noqa: F401  (register their handlers in the op table)
from .context import Analysis, Binding, Ctx, Evidence, TInfo, const_info, constants, opset_of
from .dims import Dim, Origin, Poly, Symbol, Vals, evaluate
from .errors import RefusedError
from .ops import HANDLERS, fallback
from .ops_ort import ort_fallback
from .rules import offsets

MAX_PASSES = 40


def _one_pass(model: onnx.ModelProto, input_dims: dict[str, list[Vals]], symbols: dict[str, Symbol],
              bindings: dict[Origin, Binding], consts: dict[str, tuple[np.ndarray, int]], memo: dict,
              fits: dict, evidence: Evidence) -> Ctx:
    graph = model.graph
    ctx = Ctx(graph, symbols, bindings, opset_of(model), run_nodes)
    ctx.memo, ctx.fits, ctx.evidence = memo, fits, evidence
    for name, (arr, dt) in consts.items():
        ctx.infos[name] = const_info(name, arr, dt, ctx)
    for vi in graph.input:
        if vi.name in ctx.infos:
            continue
        tt = vi.type.tensor_type
        ctx.infos[vi.name] = TInfo([Dim(v, carrier=(vi.name, k)) for k, v in enumerate(input_dims[vi.name])],
                                   None, None, tt.elem_type)
    run_nodes(ctx, graph.node)
    return ctx


def run_nodes(ctx: Ctx, nodes, record: bool = True) -> None:
    """Propagate through ``nodes`` in order; subgraph handlers call this on their bodies (whose tensors
    are not ``record``-ed as run-time dim sources: the outer graph cannot read them)."""
    outer = ctx.node
    for node in nodes:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        ctx.node = node
        ins = [ctx.info(i) for i in node.input]
        if any(i is None for i, name in zip(ins, node.input, strict=True) if name):
            continue  # an unknown input leaves the outputs unknown
        domain = "" if node.domain == "ai.onnx" else node.domain
        handler = HANDLERS.get((domain, node.op_type)) or (
            ort_fallback if domain.startswith("com.microsoft") else fallback)
        outs = handler(ctx, node, ins)
        ctx.node = node
        for name, info in zip(node.output, outs, strict=False):
            if name and info is not None:
                ctx.infos[name] = info
                if record:
                    ctx.record_dims(name, info)
    ctx.node = outer


def analyse(model: onnx.ModelProto, input_dims: dict[str, list[Vals]], symbols: dict[str, Symbol],
            seed_bindings: dict[Origin, Binding] | None = None,
            evidence: Evidence | None = None) -> Analysis:
    """Run propagation passes until no new binding appears; return the final plan. ``evidence``: the shapes
    reference exports give tensors (:mod:`winml_dynify.evidence`)."""
    consts = constants(model.graph)
    bindings: dict[Origin, Binding] = dict(seed_bindings or {})
    memo: dict = {}
    relations: dict[str, Poly] = {}
    fits: dict = {}
    for _ in range(MAX_PASSES):
        ctx = _one_pass(model, input_dims, symbols, bindings, consts, memo, fits, evidence or [])
        if ctx.relations:  # start again with the derived symbols' values
            relations.update(ctx.relations)
            symbols, input_dims = _derive(symbols, input_dims, relations)
            fits = {}
            bindings = dict(seed_bindings or {})
            continue
        extra = offsets.offset_bindings(ctx, consts)
        extra = {k: v for k, v in extra.items() if k not in bindings}
        if not ctx.new_bindings and not extra:
            return Analysis(ctx.infos, bindings, ctx.conflicts, ctx.shape_sites, symbols, ctx.upper,
                            ctx.lower, ctx.scalar_sites, ctx.dim_sources, ctx.edits, relations, ctx.ties)
        bindings.update(ctx.new_bindings)
        bindings.update(extra)
    raise RefusedError("the shape analysis did not settle; the graph is too irregular to rewrite soundly")


def _derive(symbols: dict[str, Symbol], input_dims: dict[str, list[Vals]],
            relations: dict[str, Poly]) -> tuple[dict[str, Symbol], dict[str, list[Vals]]]:
    """Give each related symbol the sample values of its polynomial, in the symbols and the input dims."""
    out = dict(symbols)
    for name, expr in relations.items():
        out[name] = Symbol(name, symbols[name].static, evaluate(expr, symbols), expr)
    swap = {symbols[n].vals: out[n].vals for n in relations}
    return out, {k: [swap.get(v, v) for v in dims] for k, dims in input_dims.items()}
