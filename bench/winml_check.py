"""winml-cli's own tools on a dynified winml export, next to winml's static export and its re-export.

Run by ``make winml-check`` with the Python of a venv that has winml-cli 0.4.0 (it pins onnx 1.18, so it
cannot share the project's venv):

    python bench/winml_check.py --dynify .venv/bin/winml-dynify [--work DIR]

For a tiny BERT and a tiny GPT-2 (random weights from a config, laid out as a Hugging Face hub cache in
``DIR/hf``; nothing is downloaded) it makes A = ``winml export`` (static, batch 1, seq 16), B = A through
``winml-dynify --dynamic-batch --dynamic-seq``, C = ``winml export --dynamic-axes`` (winml's own dynamic
re-export), runs ``winml analyze`` (default EP, and ``--ep qnn -d npu``), ``optimize``, ``quantize``,
``perf`` (winml's default shapes, then batch 2 / seq 12) and ``eval --mode compare`` (A against each) on
each, and prints
a Markdown table: exit code and the figure that matters per command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fixtures" / "winml"))
import build_checkpoints  # noqa: E402  (tiny checkpoints in a hub-cache layout, shared with the fixtures)

MODELS = {"bert": ("fixtures/tiny-bert", build_checkpoints.build_bert),
          "gpt2": ("fixtures/tiny-gpt2", build_checkpoints.build_gpt2)}
TIMEOUT = 900


def run(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[int, str]:
    """Run ``cmd``; its output goes to ``log``; return the exit code and the output."""
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
        code, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        code, out = -1, "timed out"
    log.write_text(f"$ {' '.join(cmd)}\n{out}")
    return code, out


def last_error(out: str) -> str:
    """The gist of a failure: onnxruntime's status message with its node, or the last 'Error' line."""
    m = re.search(r"running (\w+) node\. Name:'([^']+)' Status Message: ([^\n]{0,110})", out)
    if m:
        return f"{m.group(1)} {m.group(2)}: {m.group(3).strip()}"
    lines = [ln.strip() for ln in out.splitlines() if re.search(r"error|Error|assert", ln)]
    return lines[-1][:140] if lines else ""


def fused(path: Path) -> str:
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return f"{Counter(n.op_type for n in nodes)['SkipLayerNormalization']} SkipLN, {len(nodes)} nodes"


def analyze_figure(out: str) -> str:
    """The summary's supported/partial/unsupported/unknown op counts (an analysis ends non-zero when not all
    are supported)."""
    m = re.findall(r"\): (\d+/\d+/\d+/\d+)", out)
    return f"S/P/U/Unk {m[-1]}" if m else last_error(out)


def dynamic_axes(model: Path) -> dict[str, dict[str, str]]:
    m = onnx.load(str(model), load_external_data=False)
    axes = {i.name: {"0": "batch", "1": "sequence"} for i in m.graph.input}
    axes.update({o.name: {"0": "batch", "1": "sequence"} for o in m.graph.output})
    return axes


def check(name: str, variants: dict[str, Path], env: dict[str, str], work: Path, winml: str) -> list[list[str]]:
    """Rows ``[command, A, B, C]`` for one model."""
    rows = []
    shapes = work / f"{name}_shape_b2_s12.json"
    shapes.write_text(json.dumps({"batch_size": 2, "sequence_length": 12}))
    commands = {
        "analyze": lambda m, t: ([winml, "analyze", "-m", m], analyze_figure),
        "analyze --ep qnn -d npu": lambda m, t: ([winml, "analyze", "-m", m, "--ep", "qnn", "-d", "npu"],
                                                 analyze_figure),
        "optimize": lambda m, t: ([winml, "optimize", "-m", m, "-o", f"{t}_opt.onnx", "--overwrite",
                                            "--enable-skip-layer-norm-fusion"],
                                  lambda out: fused(work / f"{t}_opt.onnx")),
        "quantize -p int8": lambda m, t: ([winml, "quantize", "-m", m, "-o", f"{t}_int8.onnx", "--overwrite",
                                           "-p", "int8"], lambda out: _qdq(out)),
        "perf (default shapes)": lambda m, t: ([winml, "perf", "-m", m, "--iterations", "10", "-d", "cpu"],
                                               _latency),
        "perf batch 2, seq 12": lambda m, t: ([winml, "perf", "-m", m, "--iterations", "10", "-d", "cpu",
                                               "--shape-config", str(shapes)], _latency),
        # A as the candidate: eval makes inputs for the candidate's shapes, which a static A fixes
        "eval --mode compare (A against it)": lambda m, t: ([winml, "eval", "-m", str(variants["A"]), "--mode",
                                                             "compare", "--reference", m, "--samples", "10"],
                                                            _compare),
    }
    for label, make in commands.items():
        row = [label]
        for tag, model in variants.items():
            cmd, figure = make(str(model), f"{name}_{tag}")
            code, out = run(cmd, env, work, work / f"{name}_{tag}_{label.split()[0]}.log")
            try:
                detail = figure(out) if code == 0 or figure is analyze_figure else last_error(out)
            except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
                detail = str(e)[:80]
            row.append(f"{'ok' if code == 0 else f'exit {code}'}: {detail}".rstrip(": "))
            print(f"  {name} {tag} {label}: {row[-1]}", flush=True)
        rows.append(row)
    return rows


def _qdq(out: str) -> str:
    m = re.search(r"QDQ nodes inserted: (\d+)", out)
    return f"{m.group(1)} QDQ nodes" if m else ""


def _latency(out: str) -> str:
    m = re.search(r"(?i)(mean|avg|average)[^\n\d]*([\d.]+)\s*ms", out)
    return f"{m.group(2)} ms" if m else ""


def _compare(out: str) -> str:
    m = re.search(r"max_abs_diff_max\W*\w+=([\d.eE+-]+)", out)
    return f"max abs diff {m.group(1)}" if m else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dynify", required=True, help="the winml-dynify executable")
    ap.add_argument("--work", help="working directory (default: a new temporary one)")
    ap.add_argument("--models", default="bert,gpt2")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="winml-check-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    winml = str(Path(sys.executable).with_name("winml"))
    env = {**os.environ, "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CI": "1", "NO_COLOR": "1"}
    (work / "shape.json").write_text(json.dumps({"sequence_length": 16}))
    tables = {}
    for name in args.models.split(","):
        repo, build = MODELS[name]
        build(str(work / "hf"))
        a, b, c = (work / f"{name}_{t}.onnx" for t in "ABC")
        export = [winml, "export", "-m", repo, "--batch-size", "1", "--shape-config", "shape.json", "--overwrite"]
        code, out = run([*export, "-o", a.name], env, work, work / f"{name}_A_export.log")
        if code != 0:
            print(f"winml export of {name} failed:\n{out[-2000:]}", file=sys.stderr)
            return 1
        variants = {"A": a}
        code, out = run([args.dynify, str(a), "--dynamic-batch", "--dynamic-seq", "-o", str(b)], env, work,
                        work / f"{name}_B_dynify.log")
        print(f"{name}: winml-dynify exit {code}", flush=True)
        if code == 0:
            variants["B"] = b
        (work / f"{name}_axes.json").write_text(json.dumps(dynamic_axes(a)))
        code, out = run([*export, "-o", c.name, "--dynamic-axes", f"{name}_axes.json"], env, work,
                        work / f"{name}_C_export.log")
        if code == 0:
            variants["C"] = c
        tables[name] = (list(variants), check(name, variants, env, work, winml))
    for name, (tags, rows) in tables.items():
        names = {"A": "A: winml export", "B": "B: winml-dynify", "C": "C: winml export --dynamic-axes"}
        print(f"\n### {name}\n\n| command | " + " | ".join(names[t] for t in tags) + " |")
        print("|---" * (len(tags) + 1) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    print(f"\nlogs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
