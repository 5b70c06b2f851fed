"""Side-by-side figures in one run (onnxruntime CPU, one intra-op thread, interleaved runs, medians).

1. Latency of the dynified model against the static export made AT each shape (the exported one and the
   fixture's references), and against a torch ``dynamic_axes`` re-export of the same weights where there
   is one; node counts and the op types whose counts differ after onnxruntime's ORT_ENABLE_ALL optimiser.
2. Cost of the tool: ``winml-dynify --no-check`` against a plain ``onnx.load`` + ``onnx.save`` of the same
   file (time of the work, and peak RSS of the process), and on generated graphs of many nodes.

Fast mode (the default, a few minutes): tiny fixtures and a 10k-node graph. ``--full`` (or
``BENCH_FULL=1``) adds real-size random-weight models exported by ``bench/real_models.py`` (BERT-base,
GPT-2 small, a Llama-shaped decoder, T5-small encoder, ViT-base, Swin-tiny), a 2.7 GB Llama-shaped
decoder with external data generated without torch (``synthetic.llama_external``), the 100k- and
1M-node graphs, BERT-base's verification time, and ``dynamic_axes`` re-exports of the tiny fixtures (the
tiny table's re-export column, also in fast mode once they are in ``BENCH_CACHE``). The exports need
torch and transformers: the interpreter of ``BENCH_TORCH_PYTHON`` (default ``.venv-fixtures/bin/python``,
the ``make fixtures`` venv); without one these parts are skipped, and said.

    python bench/bench.py [--full] [--cases bert_tiny,gpt2] [--real bert_base] [--graphs 10000] [--runs 200]
    make bench                  (fast)
    BENCH_FULL=1 make bench     (full)
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))
sys.path.insert(0, str(ROOT / "bench"))
from make_inputs import input_seed, make_inputs  # noqa: E402
from synthetic import chain_model, llama_external  # noqa: E402

from winml_dynify import dynify  # noqa: E402

TINY = ["bert_tiny", "gpt2", "llama", "t5_encoder", "t5_encoder --max seq=512", "clip_text", "swin", "vit",
        "resnet_hw", "convnext", "wav2vec2", "mobilenetv2_batch"]
PROBE = ROOT / "bench" / "cost_probe.py"
CACHE = Path(os.environ.get("BENCH_CACHE", ROOT / "out" / "bench-models"))
FUSED = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization", "Gemm", "MatMul",
         "FusedMatMul", "BiasGelu", "FastGelu", "Gelu", "SkipSimplifiedLayerNormalization", "RotaryEmbedding",
         "Shape", "Gather", "Concat", "Range", "Reshape", "Expand", "Where")


def _session(model: bytes | str, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, saved: str | None = None,
             disabled: list[str] | None = None):
    """One-thread CPU session; ``disabled``: onnxruntime optimisers switched off by name."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 3
    if saved:
        so.optimized_model_filepath = saved
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def interleaved(sessions: dict[str, ort.InferenceSession], feeds: dict, runs: int, warmup: int) -> dict[str, float]:
    """Median seconds per run of each session, the sessions taking turns run by run."""
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def optimised_ops(model: bytes | str) -> collections.Counter:
    """Op-type histogram of ``model`` after ORT_ENABLE_ALL (via optimized_model_filepath)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/opt.onnx"
        _session(model, saved=path)
        return collections.Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)


def op_diff(static: collections.Counter, dyn: collections.Counter) -> str:
    keys = sorted(k for k in set(static) | set(dyn) if static[k] != dyn[k])
    return ", ".join(f"{k} {static[k]}->{dyn[k]}" for k in keys) or "same ops"


def latency_case(name: str, root: Path, case: dict, dyn_model: bytes | str, runs: int, warmup: int,
                 reexport: str | None = None) -> list[dict]:
    """Rows of one case: per shape, static at that shape vs dynified (vs the re-export)."""
    dyn = _session(dyn_model)
    rex = _session(str(root / reexport)) if reexport else None
    rows = []
    for entry in [case["s0"], *case["references"]]:
        feeds = make_inputs(case["inputs"], entry["dims"], input_seed(name, entry["dims"]))
        sessions = {"static": _session(str(root / entry["file"])), "dynamic": dyn}
        if rex is not None:
            sessions["reexport"] = rex
        med = interleaved(sessions, feeds, runs, warmup)
        rows.append({"case": name, "shape": ",".join(f"{k}={v}" for k, v in entry["dims"].items()),
                     **{f"{k}_ms": v * 1e3 for k, v in med.items()},
                     "ratio": med["dynamic"] / med["static"],
                     "ratio_reexport": med["dynamic"] / med["reexport"] if rex is not None else None})
    return rows


def node_row(name: str, static_model: str, dyn_model: bytes | str) -> dict:
    s, d = optimised_ops(static_model), optimised_ops(dyn_model)
    return {"case": name, "static_nodes": sum(s.values()), "dynamic_nodes": sum(d.values()), "diff": op_diff(s, d)}


def tiny_latency(names: list[str], runs: int) -> tuple[list[dict], list[dict]]:
    cases = {c["name"]: c for c in json.loads((ROOT / "fixtures" / "manifest.json").read_text())["cases"]}
    rows, nodes = [], []
    for label in names:  # a fixture's name, optionally with ``--max SYMBOL=N``
        name, _, top = label.partition(" --max ")
        maxima = {top.split("=")[0]: int(top.split("=")[1])} if top else None
        case = cases[name]
        res = dynify(ROOT / "fixtures" / case["model"], case["axes"], verify=False, maxima=maxima)
        dyn = res.model.SerializeToString()
        rex = CACHE / "tiny" / f"{name}_dynamic.onnx"  # made by real_models.py --tiny (full mode)
        for row in latency_case(name, ROOT / "fixtures", case, dyn, runs, 20, str(rex) if rex.is_file() else None):
            rows.append({**row, "case": label})
        nodes.append({**node_row(name, str(ROOT / "fixtures" / case["model"]), dyn), "case": label})
    return rows, nodes


def probe(*args: str, timeout: float | None = None) -> dict:
    """Run ``cost_probe.py`` in a fresh process: its timings and peak RSS (MB)."""
    try:
        p = subprocess.run([sys.executable, str(PROBE), *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished after {timeout:.0f} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def cost_rows(label: str, model: Path, axes: list[str], external: bool = False) -> list[dict]:
    """load+save (and for external data also the graph-only load+save) against the CLI's --no-check
    rewrite, each in its own process, median of three (one run each for external data: minutes per run).
    For external data, *graphcopy* is the graph-only load+save plus a plain copy of the data files: the
    floor for an output that owns its weights on a filesystem without reflinks."""
    rows = []
    modes = ["loadsave", "graphonly", "graphcopy", "dynify"] if external else ["loadsave", "dynify"]
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        for mode in modes:
            trials = [probe(mode, str(model), f"{tmp}/{mode}.onnx", *axes) for _ in range(1 if external else 3)]
            good = [t for t in trials if "error" not in t]
            if not good:
                rows.append({"model": label, "mode": mode, "error": trials[0]["error"]})
                continue
            rows.append({"model": label, "mode": mode, "wall_s": float(np.median([t["wall_s"] for t in good])),
                         "cpu_s": float(np.median([t["cpu_s"] for t in good])),
                         "rss_mb": float(np.median([t["rss_mb"] for t in good]))})
    return rows


def synthetic_rows(sizes: list[int], timeout: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"chain{n}.onnx"
            onnx.save(chain_model(n), str(path))
            r = probe("dynify", str(path), f"{tmp}/out{n}.onnx", "x:1=seq", timeout=timeout)
            rows.append({"nodes": n, **r})
    return rows


def torch_python() -> str | None:
    exe = os.environ.get("BENCH_TORCH_PYTHON", str(ROOT / ".venv-fixtures" / "bin" / "python"))
    try:
        ok = subprocess.run([exe, "-c", "import torch, transformers"], capture_output=True).returncode == 0
    except OSError:
        return None
    return exe if ok else None


def real_models(big: bool, tiny: list[str]) -> list[dict] | str:
    """Export the real-size models (and the ``dynamic_axes`` re-exports of the ``tiny`` fixtures) into
    ``CACHE`` with torch; their cases, or why they were skipped."""
    exe = torch_python()
    if exe is None:
        return "skipped: torch and transformers are not importable (set BENCH_TORCH_PYTHON or run make fixtures)"
    cmd = [exe, str(ROOT / "bench" / "real_models.py"), str(CACHE), "--tiny", ",".join(tiny)] + \
        (["--big"] if big else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return f"skipped: the export failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    return json.loads((CACHE / "cases.json").read_text())


def _geo(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def print_latency(rows: list[dict]) -> None:
    print("| case | shape | static ms | dynamic ms | dyn/static | re-export ms | dyn/re-export |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rex = f"{r['reexport_ms']:.3f} | {r['ratio_reexport']:.2f}" if r.get("reexport_ms") else "- | -"
        print(f"| {r['case']} | {r['shape']} | {r['static_ms']:.3f} | {r['dynamic_ms']:.3f} | {r['ratio']:.2f} "
              f"| {rex} |")
    ratios = [r["ratio"] for r in rows]
    worst = max(rows, key=lambda r: r["ratio"])
    print(f"\ngeometric mean dyn/static {_geo(ratios):.3f} over {len(rows)} shapes; worst {worst['ratio']:.2f} "
          f"({worst['case']} {worst['shape']}); {sum(x <= 1.05 for x in ratios)}/{len(rows)} within 1.05x")
    rex = [r["ratio_reexport"] for r in rows if r.get("ratio_reexport")]
    if rex:
        print(f"geometric mean dyn/re-export {_geo(rex):.3f} over {len(rex)} shapes; "
              f"{sum(x <= 1.0 for x in rex)}/{len(rex)} at or below 1.0x")


def print_nodes(rows: list[dict]) -> None:
    print("| case | static nodes | dynamic nodes | op counts that differ (static->dynamic) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['static_nodes']} | {r['dynamic_nodes']} | {r['diff']} |")


def print_cost(rows: list[dict]) -> None:
    """Each run against load+save; external-data runs also against graph-only load+save plus a copy of
    the data (the floor when the output must own its weights)."""
    print("| model | run | wall s | cpu s | peak RSS MB | wall / load+save | RSS / load+save | wall / graph+copy |")
    print("|---|---|---|---|---|---|---|---|")
    base: dict[str, dict] = {}
    copy: dict[str, dict] = {}
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['mode']} | {r['error']} | | | | | |")
            continue
        if r["mode"] == "loadsave":
            base[r["model"]] = r
        if r["mode"] == "graphcopy":
            copy[r["model"]] = r
        b, c = base.get(r["model"]), copy.get(r["model"])
        ratio = f"{r['wall_s'] / b['wall_s']:.2f} | {r['rss_mb'] / b['rss_mb']:.2f}" if b else "- | -"
        floor = f"{r['wall_s'] / c['wall_s']:.2f}" if c else "-"
        print(f"| {r['model']} | {r['mode']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['rss_mb']:.0f} | {ratio} "
              f"| {floor} |")


def print_synthetic(rows: list[dict]) -> None:
    print("| nodes | wall s | cpu s | peak RSS MB |")
    print("|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['nodes']} | {r['error']} | | {r.get('rss_mb') or ''} |")
        else:
            print(f"| {r['nodes']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['rss_mb']:.0f} |")


def real_size(cases: list[dict], names: set[str], costs: bool = True, runs: int = 10) -> None:
    """Latency (median of ``runs`` interleaved runs), nodes and rewrite cost of the exported real-size
    models (``names``: all when empty), printed model by model."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for case in cases:
            if names and case["name"] not in names:
                continue
            model = CACHE / case["model"]
            out = Path(tmp) / f"{case['name']}.onnx"
            made = probe("dynify", str(model), str(out), *case["axes"])
            if "error" in made:
                print(f"\n{case['name']}: not dynified: {made['error']}")
                continue
            print(f"\n### {case['name']} (median of {runs} interleaved runs)\n")
            print_latency(latency_case(case["name"], CACHE, case, str(out), runs, 2, case.get("reexport")))
            print()
            print_nodes([node_row(case["name"], str(model), str(out))])
            if costs and case["name"] == "bert_base":
                rows = cost_rows("bert_base", model, case["axes"])
                rows.append({"model": "bert_base", "mode": "verify", **probe("verify", str(model), str(out),
                                                                              *case["axes"])})
                print("\nrewrite cost against load+save (each in its own process, median of 3)\n")
                print_cost(rows)
            sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", default=os.environ.get("BENCH_FULL") == "1")
    ap.add_argument("--cases", default=",".join(TINY), help="tiny fixtures to time ('' for none)")
    ap.add_argument("--real", default="", help="with --full: only these real-size models (comma-separated)")
    ap.add_argument("--graphs", default="", help="node counts of the generated graphs (default 10k; "
                    "with --full 10k, 100k, 1M)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--real-runs", type=int, default=20, help="runs per shape of the real-size models")
    args = ap.parse_args()
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, {os.cpu_count()} cores, one intra-op thread, "
          f"{'full' if args.full else 'fast'} mode")
    cases = real_models(big=False, tiny=args.cases.split(",") if args.cases else []) if args.full else None
    if args.cases:
        rows, nodes = tiny_latency(args.cases.split(","), args.runs)
        print("\n## Latency, tiny fixtures\n")
        print_latency(rows)
        print("\n## Nodes after ORT_ENABLE_ALL, tiny fixtures (exported shape)\n")
        print_nodes(nodes)
    sizes = [int(n) for n in args.graphs.split(",") if n] or ([10_000, 100_000, 1_000_000] if args.full else [10_000])
    if sizes != [0]:
        print("\n## Cost on generated graphs (winml-dynify --no-check, one symbol)\n")
        print_synthetic(synthetic_rows(sizes, timeout=1800))
    if not args.full:
        print("\nreal-size models: skipped in fast mode (--full or BENCH_FULL=1)")
        return
    print("\n## A 2.7 GB Llama-shaped decoder with external data (one file per tensor)\n")
    big = llama_external(CACHE / "llama_external")
    print_cost(cost_rows("llama_external", big, ["input_ids:0=batch", "input_ids:1=seq"], external=True))
    if isinstance(cases, str):
        print(f"\nreal-size models: {cases}")
        return
    print("\n## Real-size random-weight models")
    real_size(cases, set(filter(None, args.real.split(","))), runs=args.real_runs)


if __name__ == "__main__":
    main()
