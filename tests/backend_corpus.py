"""The ONNX backend node tests as a corpus: ``python tests/backend_corpus.py DATA_DIR`` (``make fuzz``).

For every model whose inputs are all static tensors, axis 0 and then the last axis of every input are made
symbolic (one symbol per input) and the run is classified as the command line would end it. A written
model must pass the full onnx.checker (when the input does) and give the expected outputs at the exported
shape; anything else is counted as ``wrong``, ``checker-invalid``, ``traceback`` or ``crash``, and the
script exits 1 when any of those is nonzero. Each model runs in a forked child, so a crash is counted too.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from winml_dynify import DynifyError, dynify, io
from winml_dynify.conform import checker_problem
from winml_dynify.errors import EXIT_REFUSED, EXIT_USAGE, EXIT_VERIFY_FAILED

BAD = ("wrong", "checker-invalid", "traceback", "crash", "timeout")


def _static_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto] | None:
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        if any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim):
            return None
        out.append(vi)
    return out


def _expected(case: Path, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    data = case / "test_data_set_0"
    names = [vi.name for vi in model.graph.input if vi.name not in {t.name for t in model.graph.initializer}]
    feeds = {}
    for k, name in enumerate(names):
        t = onnx.TensorProto()
        t.ParseFromString((data / f"input_{k}.pb").read_bytes())
        feeds[name] = numpy_helper.to_array(t)
    outs = []
    for k in range(len(model.graph.output)):
        t = onnx.TensorProto()
        t.ParseFromString((data / f"output_{k}.pb").read_bytes())
        outs.append(numpy_helper.to_array(t))
    return feeds, outs


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and (np.allclose(x, y, rtol=1e-3, atol=1e-5, equal_nan=True) if x.dtype.kind in "fc"
                                else np.array_equal(x, y)) for x, y in zip(a, b, strict=True))


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def classify(case: Path, which: str) -> tuple[str, str]:
    """(outcome, detail) of one model with axis 0 (``which="first"``) or the last axis made symbolic."""
    try:
        model, _ = io.read(case / "model.onnx")
    except DynifyError as e:
        return "usage", str(e)
    except Exception as e:  # a traceback is an outcome here
        return "traceback", f"{type(e).__name__}: {e}"
    inputs = _static_inputs(model)
    if inputs is None:
        return "skipped", "non-tensor or non-static input"
    axes = [f"{vi.name}:{0 if which == 'first' else -1}=d{k}" for k, vi in enumerate(inputs)
            if vi.type.tensor_type.shape.dim]
    if not axes:
        return "skipped", "scalar inputs only"
    try:
        res = dynify(model, axes)
    except DynifyError as e:
        kind = {EXIT_REFUSED: "refused", EXIT_USAGE: "usage", EXIT_VERIFY_FAILED: "verify-failed"}[e.exit_code]
        return kind, str(e).splitlines()[0][:160]
    except Exception as e:
        return "traceback", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    if res.report is not None and not res.report.ok:
        bad = next(c for c in res.report.checks if c.status == "failed")
        return "verify-failed", f"{bad.oracle}: {bad.note[:120]}"
    problem = checker_problem(res.model)
    if problem and not checker_problem(model):
        return "checker-invalid", problem
    try:
        feeds, want = _expected(case, model)
        got = _run(res.model, feeds)
    except Exception as e:
        return "wrong", f"the written model fails at the exported shape: {str(e).splitlines()[0][:160]}"
    if not _same(got, want) and not _same(got, _run(model, feeds)):
        return "wrong", "outputs differ from the expected ones and from the input model's"
    return "written", ""


def _child(case: Path, which: str, conn) -> None:
    conn.send(classify(case, which))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="onnx/backend/test/data/node of an onnx wheel that ships it")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per model")
    ap.add_argument("--limit", type=int, default=0, help="only the first N models (0: all)")
    args = ap.parse_args()
    cases = sorted(p for p in args.data.iterdir() if (p / "model.onnx").is_file())
    cases = cases[:args.limit] if args.limit else cases
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    ctx = mp.get_context("fork")
    for k, case in enumerate(cases):
        for which in ("first", "last"):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(case, which, send))
            proc.start()
            send.close()
            outcome, detail = ("timeout", f"over {args.timeout:g} s")
            if recv.poll(args.timeout):
                try:
                    outcome, detail = recv.recv()
                except EOFError:
                    outcome, detail = "crash", "the process died"
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            if proc.exitcode and proc.exitcode < 0 and outcome == "timeout":
                outcome, detail = "crash", f"signal {-proc.exitcode}"
            counts[outcome] += 1
            if outcome in ("refused", "usage", "verify-failed"):
                reasons[(outcome, detail.split(":")[0][:60])] += 1
            if outcome in BAD:
                print(f"{outcome}: {case.name} ({which} axis): {detail}", flush=True)
        if (k + 1) % 100 == 0:
            print(f"... {k + 1}/{len(cases)} models", file=sys.stderr, flush=True)
    tried = sum(counts.values()) - counts["skipped"]
    print(f"models: {len(cases)}; runs tried: {tried} (skipped: {counts['skipped']})")
    for key in ("written", "refused", "verify-failed", "usage", *BAD):
        print(f"  {key}: {counts[key]}")
    print("most common reasons:")
    for (kind, why), n in reasons.most_common(15):
        print(f"  {n:5d}  {kind}: {why}")
    return 1 if any(counts[k] for k in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
