"""End to end on real torch exports: the CLI's output against static exports of the same weights.

For every fixture the tool either refuses (non-zero exit, nothing written) or its output matches the
independent static references at every reference shape. A case marked ``expect: pass`` must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, manifest_cases, run

sys.path.insert(0, str(FIXTURES))
from make_inputs import input_seed, make_inputs

CASES = manifest_cases()
# Cases the tool refuses today, each with the reason it gives (see docs/SUPPORT.md).
KNOWN_REFUSED = {
    "vit_hw",  # learned position table sized for the exported patch grid
    "mean_pool_scale",  # a folded x.size(1) ** -0.5 no oracle can check without --reference
    "xlnet", "funnel",  # relative-position constants folded at the exported length
    "mobilevit_hw",  # which factor of its patch unfold grows only a reference export tells (below)
    "swin_hw",  # its roll shifts and window splits are decided by a reference export (below)
    "mobilevitv2_hw",  # likewise: its patch splits are decided by a reference export (below)
}


# Cases whose splits only a reference export decides: run with one reference, checked against the others.
DECIDED_BY_REFERENCE = ["mobilevit_hw", "mobilevitv2_hw", "swin_hw"]


def dynify_cli(case, axes: list[str], out, references: list[dict] = ()) -> subprocess.CompletedProcess:
    """The CLI on the case's model; a refusal must leave no output and print no traceback."""
    cmd = [sys.executable, "-m", "winml_dynify", str(case["root"] / case["model"]), "-o", str(out), "--quiet"]
    for a in axes:
        cmd += ["--axis", a]
    for r in references:
        cmd += ["--reference", str(case["root"] / r["file"])]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        assert not out.exists() and "Traceback" not in p.stderr, p.stderr
    return p


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_parity(case, tmp_path):
    assert_parity(case, tmp_path)


def assert_parity(case, tmp_path) -> None:
    """The CLI on the case with all its axes: refused (if that is expected) or equal to every reference."""
    out = tmp_path / "out.onnx"
    p = dynify_cli(case, case["axes"], out)
    if p.returncode != 0:
        assert case["expect"] == "refuse" or case["name"] in KNOWN_REFUSED, p.stderr
        return
    assert case["expect"] != "refuse", "a model that must be refused was written"
    model = onnx.load(out)
    for spec in case["axes"]:
        name, rest = spec.rsplit(":", 1)
        axis, sym = rest.split("=")
        vi = next(v for v in model.graph.input if v.name == name)
        assert vi.type.tensor_type.shape.dim[int(axis)].dim_param == sym
    ranges = json.loads(next((p.value for p in model.metadata_props if p.key == "winml.dynify.symbol_ranges"), "{}"))
    for ref in [case["s0"], *case["references"]]:
        feeds = make_inputs(case["inputs"], ref["dims"], input_seed(case["name"], ref["dims"]))
        want = run(onnx.load(case["root"] / ref["file"]), feeds)
        if any(r.get("max") is not None and ref["dims"].get(s, 0) > r["max"] for s, r in ranges.items()):
            with pytest.raises(Exception, match="must_be_at_most"):  # outside the stated range: a clean error
                run(model, feeds)
            continue
        if ref.get("optional"):
            try:
                got = run(model, feeds)
            except Exception:  # outside the declared range: a clean error is the right answer
                continue
        else:
            got = run(model, feeds)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape, (ref["dims"], a.shape, b.shape)
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=str(ref["dims"]))


@pytest.mark.parametrize("name", DECIDED_BY_REFERENCE)
def test_fixture_decided_by_a_reference(name, tmp_path):
    """With a reference export as ``--reference`` (those that move the most symbols other than the batch
    first; one outside the traced path's range is set aside), the case is written, and it matches the
    exported shape and every other reference."""
    case = next(c for c in CASES if c["name"] == name)
    s0 = case["s0"]["dims"]
    out = tmp_path / "out.onnx"
    for given in sorted(case["references"], key=lambda r: -sum(v != s0[k] for k, v in r["dims"].items()
                                                              if k != "batch")):
        p = dynify_cli(case, case["axes"], out, [given])
        if p.returncode == 0:
            break
    assert p.returncode == 0, p.stderr
    model = onnx.load(out)
    ranges = json.loads(next(p.value for p in model.metadata_props if p.key == "winml.dynify.symbol_ranges"))
    inside = [r for r in case["references"] if r is not given and all(  # the written model states its range
        v >= ranges[k]["min"] and v % ranges[k]["multiple"] == 0 for k, v in r["dims"].items())]
    check_references(case, model, [case["s0"], *inside])


def _subset(case, batch: bool):
    """The case asked for batch alone (or for everything but batch): those axes, and the references
    where only those symbols moved."""
    axes = [a for a in case["axes"] if a.endswith("=batch") == batch]
    s0 = case["s0"]["dims"]
    moved = {a.rsplit("=", 1)[1] for a in axes}
    refs = [r for r in case["references"]
            if all(v == s0[k] for k, v in r["dims"].items() if k not in moved) and r["dims"] != s0]
    return axes, refs


SUBSETS = [(c, batch) for c in CASES for batch in (True, False)
           if len(c["axes"]) > len(_subset(c, batch)[0]) > 0 and _subset(c, batch)[1]]
KNOWN_SUBSET_REFUSED = {(name, False) for name in KNOWN_REFUSED}


@pytest.mark.parametrize("case,batch", SUBSETS,
                         ids=[f"{c['name']}-{'batch' if b else 'no-batch'}" for c, b in SUBSETS])
def test_fixture_subset_of_axes(case, batch, tmp_path):
    """Only batch dynamic, or everything but batch: the rewrite must leave what depends on the static
    axes alone and still find every constant the moving ones reach (mask row offsets, ...)."""
    axes, refs = _subset(case, batch)
    out = tmp_path / "out.onnx"
    p = dynify_cli(case, axes, out)
    if p.returncode != 0:
        assert case["expect"] == "refuse" or (case["name"], batch) in KNOWN_SUBSET_REFUSED, p.stderr
        return
    assert case["expect"] != "refuse", "a model that must be refused was written"
    check_references(case, onnx.load(out), refs)


def check_references(case, model: onnx.ModelProto, refs: list[dict], rtol: float = 1e-3, atol: float = 1e-4) -> None:
    """``model`` against each reference export on the same inputs: equal shapes and numbers; a run that fails
    is accepted only for a reference marked optional (outside the declared range)."""
    for ref in refs:
        feeds = make_inputs(case["inputs"], ref["dims"], input_seed(case["name"], ref["dims"]))
        want = run(onnx.load(case["root"] / ref["file"]), feeds)
        try:
            got = run(model, feeds)
        except Exception:  # outside the declared range: a clean error is the right answer
            assert ref.get("optional"), ref["dims"]
            continue
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape, (ref["dims"], a.shape, b.shape)
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=str(ref["dims"]))


DECODERS = [c for c in CASES if any(r["dims"].get("seq") == 1 for r in c["references"]) and
            any(a.endswith("=past") for a in c["axes"])]


@pytest.mark.parametrize("case", DECODERS, ids=[c["name"] for c in DECODERS])
def test_decode_step_export(case, tmp_path):
    """The same decoder exported at its decode step (seq 1) is the model: batch and past dynamic match the
    other decode-step references; seq dynamic cannot be read from one token (a position is one number, a
    causal mask all ones) and is refused."""
    step = next(r for r in case["references"] if r["dims"]["seq"] == 1)
    decode = {**case, "model": step["file"], "s0": step,
              "axes": [a for a in case["axes"] if not a.endswith("=seq")],
              "references": [r for r in [case["s0"], *case["references"]] if r["dims"]["seq"] == 1 and r is not step]}
    assert decode["references"]
    p = dynify_cli(decode, decode["axes"], tmp_path / "step.onnx")
    assert p.returncode == 0, p.stderr
    assert_parity(decode, tmp_path)
    p = dynify_cli(decode, case["axes"], tmp_path / "seq.onnx")
    assert p.returncode in (1, 3) and not (tmp_path / "seq.onnx").exists(), p.stderr
