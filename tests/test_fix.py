"""Fixing the symbols back gives the static graph again (after onnxruntime's basic folding), less the Reshape
chains the rewrite reads through."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FIXTURES, run

from winml_dynify import UsageError, dynify
from winml_dynify.fix import fix_dims


def basic_histogram(model: onnx.ModelProto) -> collections.Counter:
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(Path(tmp) / "o.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("case", ["bert_tiny", "gpt2", "llama"])
def test_fixed_back_model_has_the_static_op_histogram(case):
    path = FIXTURES / case / "s0_batch1_seq16.onnx"
    names = [vi.name for vi in onnx.load(path).graph.input]
    res = dynify(path, [f"{n}:{a}={s}" for n in names for a, s in ((0, "batch"), (1, "seq"))], verify=False)
    fixed = fix_dims(res.model, {"batch": 1, "seq": 16})
    got, want = basic_histogram(fixed), basic_histogram(onnx.load(path))
    # the same ops, less the Reshape chains the rewrite reads through (rules/reshape_chains.py), and with
    # the padding mask's Flatten + Gather at its own positions an Unsqueeze (rules/flat_gathers.py)
    if any(r["rule"] == "flat-gather" for r in res.rewrites):
        want = want - collections.Counter(["Flatten", "Gather"]) + collections.Counter(["Unsqueeze"])
    assert {k: v for k, v in got.items() if k != "Reshape"} == {k: v for k, v in want.items() if k != "Reshape"}
    assert got["Reshape"] <= want["Reshape"]
    feeds = {n: np.ones((1, 16), np.int64) for n in names}
    for a, b in zip(run(fixed, feeds), run(onnx.load(path), feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_symbol_is_a_usage_error():
    res = dynify(FIXTURES / "linear" / "s0_batch3.onnx", ["x:0=batch"], verify=False)
    with pytest.raises(UsageError, match="unknown symbols"):
        fix_dims(res.model, {"seq": 4})


def test_fix_keeps_hierarchy_tags():
    path = next((FIXTURES / "bert_tiny_winml").glob("s0_*.onnx"))
    names = [vi.name for vi in onnx.load(path).graph.input]
    res = dynify(path, [f"{n}:{a}={s}" for n in names for a, s in ((0, "batch"), (1, "seq"))], verify=False)
    fixed = fix_dims(res.model, {"batch": 1, "seq": 16})
    tags = [{p.key for p in n.metadata_props} for n in fixed.graph.node]
    assert tags and all("winml.hierarchy.tag" in t for t in tags)


def test_fix_command_writes_the_static_model(tmp_path):
    import subprocess
    import sys

    dyn, fixed = tmp_path / "d.onnx", tmp_path / "f.onnx"
    src = FIXTURES / "gpt2" / "s0_batch1_seq16.onnx"
    axes = [a for n in ("input_ids", "attention_mask") for a in ("--axis", f"{n}:0=batch", "--axis", f"{n}:1=seq")]
    assert subprocess.run([sys.executable, "-m", "winml_dynify", src, *axes, "-o", dyn, "--no-check"]).returncode == 0
    p = subprocess.run([sys.executable, "-m", "winml_dynify", "fix", dyn, "batch=1", "seq=16", "-o", fixed],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    dims = [d.dim_value for d in onnx.load(fixed).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 16]
    bad = subprocess.run([sys.executable, "-m", "winml_dynify", "fix", dyn, "seq"], capture_output=True, text=True)
    assert bad.returncode == 2 and "malformed" in bad.stderr
