"""Derived fixtures (fixtures/derived: onnxruntime-optimised, float16, QDQ, version-converted S0 models
of base cases): the CLI's output against the base case's independent references, within the tolerance
the derivation implies (see fixtures/make_derived.py)."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, run
from test_fixtures import check_references, dynify_cli

from winml_dynify.ops_ort import nchwc_block

sys.path.insert(0, str(FIXTURES))
from make_inputs import input_seed, make_inputs

MANIFEST = FIXTURES / "derived" / "manifest.json"
CASES = [{**c, "root": MANIFEST.parent} for c in json.loads(MANIFEST.read_text())["cases"]]
# Derived cases the tool refuses, each with the words its error must contain.
KNOWN_REFUSED = {
    # onnxconverter-common's keep_io_types output is not a valid model: its Softmax Cast pairs write float32
    # into edges it declares float16 (onnxruntime refuses to load it); the error blames the input
    "vit_fp16_io32": "the input model itself fails onnx's strict type and shape inference",
}


# one case per derivation kind runs in `make test`; `make derived` runs the others
FAST = {"vit_ortall", "llama_ortall", "bert_tiny_fp16", "resnet_batch_qdq"}
PARAMS = [pytest.param(c, id=c["name"], marks=() if c["name"] in FAST else pytest.mark.derived_full) for c in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_derived_parity(case, tmp_path):
    need = case.get("requires", {}).get("nchwc_block")
    if need is not None and need != nchwc_block():
        pytest.skip(f"written for NCHWc block {need}; this machine's onnxruntime uses {nchwc_block()}")
    out = tmp_path / "out.onnx"
    p = dynify_cli(case, case["axes"], out)
    if p.returncode != 0:
        assert case["name"] in KNOWN_REFUSED, p.stderr
        assert KNOWN_REFUSED[case["name"]] in p.stderr
        return
    assert case["name"] not in KNOWN_REFUSED
    model = onnx.load(out)
    tol = case["tolerance"]
    if "truth" in case:
        per_sample(case, model, tol)
        return
    check_references(case, model, [case["s0"], *case["references"]], **tol)


def per_sample(case: dict, model: onnx.ModelProto, tol: dict) -> None:
    """At each batch of ``truth.per-sample``: the output equals the S0 model (batch 1) run on each sample."""
    s0 = onnx.load(case["root"] / case["s0"]["file"])
    for dims in case["truth"]["per-sample"]:
        feeds = make_inputs(case["inputs"], dims, input_seed(case["name"], dims))
        got = run(model, feeds)
        rows = [run(s0, {k: v[b:b + 1] for k, v in feeds.items()}) for b in range(dims["batch"])]
        for k, a in enumerate(got):
            want = np.concatenate([r[k] for r in rows])
            np.testing.assert_allclose(a.astype(np.float64), want.astype(np.float64), err_msg=str(dims), **tol)
