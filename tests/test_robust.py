"""Unattended use: no file ever clobbered, every failure one line and an exit code, checker-valid outputs,
hostile inputs refused cleanly, sizes outside the recorded range refused by ``fix``, two-step use."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, make_model, run, tensor
from onnx import TensorProto, helper, numpy_helper

from winml_dynify import cli, dynify
from winml_dynify.errors import EXIT_VERIFY_FAILED, Interrupted, UsageError
from winml_dynify.verify import oracles

BERT = FIXTURES / "bert_tiny" / "s0_batch1_seq16.onnx"
TINY = FIXTURES / "bert_tiny_winml" / "s0_batch1_seq16.onnx"
NAMES = ("input_ids", "attention_mask", "token_type_ids")
BATCH = [f"{n}:0=batch" for n in NAMES]
SEQ = [f"{n}:1=seq" for n in NAMES]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_run(monkeypatch, capsys):
    """Run the command line in this process (fast, and a test can make a library call fail)."""
    def run_cli(*args: object) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["winml-dynify", *map(str, args)])
        old = signal.getsignal(signal.SIGTERM)
        try:
            with pytest.raises(SystemExit) as e:
                cli.main()
        finally:
            signal.signal(signal.SIGTERM, old)
        out = capsys.readouterr()
        return Result(e.value.code or 0, out.out, out.err)
    return run_cli


def relu_model(shape=(2, 3), **kw) -> onnx.ModelProto:
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", list(shape))], [tensor("y", list(shape))])
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- no file clobbered -------------------------------------------------------------------------------------------

@pytest.fixture
def bert_copy(tmp_path) -> Path:
    src = tmp_path / "model.onnx"
    src.write_bytes(BERT.read_bytes())
    return src


@pytest.mark.parametrize("which", ["report-is-input", "report-is-output", "output-symlink-to-input",
                                   "output-hardlink-to-input", "report-is-axes-json", "output-is-reference"])
def test_no_output_may_be_an_input_or_another_output(cli_run, tmp_path, bert_copy, which):
    before = bert_copy.read_bytes()
    out = tmp_path / "out.onnx"
    axes = tmp_path / "axes.json"
    axes.write_text(json.dumps({"input_ids": {"0": "batch"}}))
    ref = tmp_path / "ref.onnx"
    ref.write_bytes((FIXTURES / "bert_tiny" / "ref_batch2_seq16.onnx").read_bytes())
    args: list[object] = ["--axis", "input_ids:0=batch", "--no-check", "-o", out]
    if which == "report-is-input":
        args += ["--report", bert_copy]
    elif which == "report-is-output":
        args += ["--report", out]
    elif which == "output-symlink-to-input":
        out.symlink_to(bert_copy)
    elif which == "output-hardlink-to-input":
        os.link(bert_copy, out)
    elif which == "report-is-axes-json":
        args = ["--axes-json", axes, "--no-check", "-o", out, "--report", axes]
    else:
        args = ["--axis", "input_ids:0=batch", "--reference", ref, "-o", ref]
    files = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    p = cli_run(bert_copy, *args)
    assert p.returncode == 2, p.stderr
    assert "choose another path" in p.stderr and "Traceback" not in p.stderr
    assert bert_copy.read_bytes() == before
    assert {q: q.read_bytes() for q in tmp_path.iterdir() if q.is_file()} == files


def test_output_sidecar_may_not_be_the_report(cli_run, tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(TINY.read_bytes())
    (tmp_path / "m_htp_metadata.json").write_bytes(TINY.with_name("s0_batch1_seq16_htp_metadata.json").read_bytes())
    out = tmp_path / "o.onnx"
    p = cli_run(src, "--dynamic-batch", "--no-check", "-o", out, "--report", tmp_path / "o_htp_metadata.json")
    assert p.returncode == 2 and "output sidecar" in p.stderr, p.stderr
    assert not out.exists()


def test_output_folder_is_a_usage_error(cli_run, tmp_path, bert_copy):
    p = cli_run(bert_copy, "--axis", "input_ids:0=batch", "--no-check", "-o", tmp_path)
    assert p.returncode == 2 and "is a folder" in p.stderr, p.stderr
    p = cli_run(bert_copy, "--axis", "input_ids:0=batch", "--no-check", "-o", bert_copy / "x.onnx")
    assert p.returncode == 2 and "is not a folder" in p.stderr, p.stderr


def test_report_into_a_missing_folder_is_created(cli_run, tmp_path, bert_copy):
    rep = tmp_path / "new" / "deeper" / "r.json"
    p = cli_run(bert_copy, "--axis", "input_ids:0=batch", "--no-check", "-o", tmp_path / "o.onnx", "--report", rep)
    assert p.returncode == 0, p.stderr
    assert json.loads(rep.read_text())["axes"][0]["symbol"] == "batch"


@pytest.mark.parametrize(("error", "needle"), [(OSError(errno.ENOSPC, "No space left on device"), "no space left"),
                                               (PermissionError(errno.EACCES, "Permission denied"), "permission"),
                                               (MemoryError(), "out of memory")])
def test_write_failures_exit_4_and_leave_no_temporary_file(cli_run, monkeypatch, tmp_path, bert_copy, error, needle):
    def failing_save(model, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise error

    monkeypatch.setattr(onnx, "save_model", failing_save)
    out = tmp_path / "sub" / "o.onnx"
    r = cli_run(bert_copy, "--axis", "input_ids:0=batch", "--no-check", "-o", out)
    err = r.stderr
    assert r.returncode == 4, err
    assert needle in err and "Traceback" not in err
    assert listing(tmp_path) == ["model.onnx", "sub"] and listing(tmp_path / "sub") == []


def test_interrupt_during_save_removes_the_temporary_folder(cli_run, monkeypatch, tmp_path, bert_copy):
    def interrupted_save(model, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise Interrupted()

    monkeypatch.setattr(onnx, "save_model", interrupted_save)
    r = cli_run(bert_copy, "--axis", "input_ids:0=batch", "--no-check", "-o", tmp_path / "o.onnx")
    assert r.returncode == 130
    assert "interrupted" in r.stderr
    assert listing(tmp_path) == ["model.onnx"]


def test_verification_runs_on_the_staged_output_then_moves_it_into_place(cli_run, monkeypatch, tmp_path, bert_copy):
    """Sessions load the staged file, or a view of it whose weights are read from it (``wire.file_view``)."""
    built = []
    real = oracles._session

    def tracked(model, level, provider, folder=None):
        built.append(Path(model) if isinstance(model, str) else Path(folder) / "o.onnx")
        return real(model, level, provider, folder)

    monkeypatch.setattr(oracles, "_session", tracked)
    out = tmp_path / "o.onnx"
    r = cli_run(bert_copy, *[x for a in BATCH for x in ("--axis", a)], "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    staged = [m for m in built if m.parent != bert_copy.parent]
    assert len(staged) == 2 and all(m.parent.name.startswith(".o.onnx.") and m.is_relative_to(tmp_path)
                                    for m in staged)
    assert listing(tmp_path) == ["model.onnx", "o.onnx"]  # the staging folder is gone
    onnx.checker.check_model(str(out), full_check=True)


@pytest.mark.parametrize("keep", [False, True])
def test_failed_verification_writes_nothing_unless_kept(cli_run, monkeypatch, tmp_path, bert_copy, keep):
    monkeypatch.setattr(oracles, "diff", lambda a, b, tol: (False, 1.0, 1.0))
    out = tmp_path / "o.onnx"
    r = cli_run(bert_copy, *[x for a in BATCH for x in ("--axis", a)], "-o", out, "-q", *(["--keep-failed"] * keep))
    assert r.returncode == EXIT_VERIFY_FAILED and "verification failed" in r.stderr, r.stderr
    assert listing(tmp_path) == (["model.onnx", "o.onnx"] if keep else ["model.onnx"])


def test_sigterm_exits_130_and_writes_nothing(tmp_path, bert_copy):
    proc = subprocess.Popen([sys.executable, "-m", "winml_dynify", str(bert_copy), "--dynamic-batch", "--dynamic-seq",
                             "-o", str(tmp_path / "o.onnx")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("--dynamic-batch")  # printed once the model is read
    time.sleep(0.1)  # inside the rewrite or its verification (the whole run takes about a second)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert listing(tmp_path) == ["model.onnx"]


# --- every failure one line and an exit code ---------------------------------------------------------------------

def _custom_model(on_shape_path: bool) -> onnx.ModelProto:
    if on_shape_path:
        nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Foo", ["s"], ["s2"], domain="custom"),
                 helper.make_node("Reshape", ["x", "s2"], ["y"])]
    else:
        nodes = [helper.make_node("Foo", ["x"], ["y"], domain="custom")]
    m = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    m.opset_import.append(helper.make_opsetid("custom", 1))
    return m


def _mistyped() -> onnx.ModelProto:
    """A Cast to float32 writing into an edge the model declares float16 (as onnxconverter-common's
    keep_io_types output does): not a valid model."""
    f16 = onnx.TensorProto.FLOAT16
    m = make_model([helper.make_node("Cast", ["x"], ["c"], to=onnx.TensorProto.FLOAT),
                    helper.make_node("Add", ["c", "x"], ["y"])],
                   [helper.make_tensor_value_info("x", f16, [2, 3])], [helper.make_tensor_value_info("y", f16, [2, 3])])
    m.graph.value_info.append(helper.make_tensor_value_info("c", f16, [2, 3]))
    return m


def _duplicate_inputs() -> onnx.ModelProto:
    m = relu_model()
    m.graph.input.append(tensor("x", [2, 3]))
    return m


@pytest.mark.parametrize(("name", "model", "needle"), [
    ("opset1", lambda: _opset(1), "opset 1 is not supported"),
    ("opset99", lambda: _opset(99), "opset 99 is not supported"),
    ("ir99", lambda: relu_model(ir_version=99), "IR version 99 is not supported"),
    ("duplicate", _duplicate_inputs, "graph input 'x' is defined more than once"),
    ("negative", lambda: make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [2, -3])],
                                    [tensor("y", [2, 3])]), "negative dim (-3)"),
    ("custom-off-path", lambda: _custom_model(False), "onnxruntime cannot run the input model"),
    ("custom-on-path", lambda: _custom_model(True), "onnxruntime cannot run the input model"),
    ("mistyped", _mistyped, "the input model itself fails onnx's strict type and shape inference"),
])
def test_hostile_models_are_usage_errors(cli_run, tmp_path, name, model, needle):
    src = save(model(), tmp_path / f"{name}.onnx")
    p = cli_run(src, "--axis", "x:0=batch", "-o", tmp_path / "o.onnx")
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def _opset(version: int) -> onnx.ModelProto:
    m = relu_model()
    m.opset_import[0].version = version
    return m


@pytest.mark.parametrize("on_shape_path", [False, True])
def test_custom_ops_without_check_give_a_checker_valid_model(cli_run, tmp_path, on_shape_path):
    src = save(_custom_model(on_shape_path), tmp_path / "c.onnx")
    p = cli_run(src, "--axis", "x:0=batch", "--no-check", "-o", tmp_path / "o.onnx")
    assert p.returncode == 0, p.stderr
    onnx.checker.check_model(onnx.load(tmp_path / "o.onnx"), full_check=True)


def test_debug_shows_the_traceback(cli_run, tmp_path):
    src = save(_opset(99), tmp_path / "m.onnx")
    p = cli_run(src, "--axis", "x:0=batch", "--debug")
    assert p.returncode == 2 and "Traceback" in p.stderr and p.stderr.rstrip().endswith("converts between opsets)")


def test_huge_input_is_never_allocated(cli_run, tmp_path):
    src = save(relu_model((1, 2**40)), tmp_path / "huge.onnx")
    p = cli_run(src, "--axis", "x:0=batch", "-o", tmp_path / "o.onnx", "--report", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    checks = json.loads((tmp_path / "r.json").read_text())["verification"]["checks"]
    assert [c["status"] for c in checks] == ["unverified"] and "check budget" in checks[0]["note"]


def test_check_shapes_above_the_budget_are_unverified(cli_run, tmp_path):
    src = save(relu_model((2, 3)), tmp_path / "m.onnx")
    p = cli_run(src, "--axis", "x:0=batch", "--check-shapes", "batch=3000000000", "-o", tmp_path / "o.onnx",
                "--report", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    checks = json.loads((tmp_path / "r.json").read_text())["verification"]["checks"]
    big = [c for c in checks if c["shape"] == {"batch": 3000000000}]
    assert big and all(c["status"] == "unverified" and "check budget" in c["note"] for c in big)


@pytest.mark.parametrize(("args", "needle"), [
    (["--seed", "-1"], "--seed -1"),
    (["--reference", "missing.onnx"], "--reference file not found"),
])
def test_bad_options_are_usage_errors(cli_run, tmp_path, args, needle):
    p = cli_run(BERT, "--axis", "input_ids:0=batch", *args, "-o", tmp_path / "o.onnx")
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr


# --- symbol names ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("symbol", [["batch"], "1batch", "bat ch", "", 3])
def test_axes_json_symbols_must_be_dim_names(cli_run, tmp_path, symbol):
    axes = tmp_path / "axes.json"
    axes.write_text(json.dumps({"input_ids": {"0": symbol}}))
    p = cli_run(BERT, "--axes-json", axes, "--no-check", "-o", tmp_path / "o.onnx")
    assert p.returncode == 2 and "is not a dim name" in p.stderr, p.stderr


def test_dotted_symbols_are_dim_names(cli_run, tmp_path):
    p = cli_run(BERT, "--axis", "input_ids:0=batch.size", "--no-check", "-o", tmp_path / "o.onnx")
    assert p.returncode == 0, p.stderr


# --- checker-valid outputs ---------------------------------------------------------------------------------------

def test_ir3_model_stays_checker_valid(rng):
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "t",
                          [tensor("x", [2, 3, 4]), tensor("s", [2], TensorProto.INT64)], [tensor("y", [2, 12])],
                          [numpy_helper.from_array(np.array([2, 12], np.int64), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
    res = dynify(m, ["x:0=batch"])
    assert res.verified
    onnx.checker.check_model(res.model, full_check=True)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], x.reshape(5, 12))


# --- fix inside the recorded range -------------------------------------------------------------------------------

def test_fix_outside_the_recorded_range_needs_force(cli_run, tmp_path):
    dyn = tmp_path / "d.onnx"
    assert cli_run(BERT, "--dynamic-batch", "--dynamic-seq", "--no-check", "-o", dyn).returncode == 0
    p = cli_run("fix", dyn, "sequence_length=100", "-o", tmp_path / "f.onnx")
    assert p.returncode == 2 and "outside the range" in p.stderr and "[1, 64]" in p.stderr, p.stderr
    assert not (tmp_path / "f.onnx").exists()
    p = cli_run("fix", dyn, "sequence_length=100", "batch=2", "--force", "-o", tmp_path / "f.onnx")
    assert p.returncode == 0, p.stderr
    p = cli_run("fix", dyn, "sequence_length=64", "-o", dyn)
    assert p.returncode == 2 and "choose another path" in p.stderr


# --- two-step use ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["batch", "seq"])
def test_two_steps_equal_one_step(first):
    steps = (BATCH, SEQ) if first == "batch" else (SEQ, BATCH)
    one = dynify(BERT, BATCH + SEQ, verify=False)
    two = dynify(dynify(BERT, steps[0], verify=False).model, steps[1], verify=False)
    assert {s: (r.min, r.max) for s, r in two.ranges.items()} == {s: (r.min, r.max) for s, r in one.ranges.items()}
    onnx.checker.check_model(two.model, full_check=True)
    rng = np.random.default_rng(3)
    for ref in sorted((FIXTURES / "bert_tiny").glob("ref_*.onnx")):
        ref_model = onnx.load(ref)
        b, s = (d.dim_value for d in ref_model.graph.input[0].type.tensor_type.shape.dim)
        feeds = {"input_ids": rng.integers(0, 100, (b, s)), "attention_mask": np.ones((b, s), np.int64),
                 "token_type_ids": rng.integers(0, 2, (b, s))}
        want = run(ref_model, feeds)
        for got in (run(two.model, feeds), run(one.model, feeds)):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("first", ["batch", "seq"])
def test_two_steps_build_the_same_graph(first):
    steps = (BATCH, SEQ) if first == "batch" else (SEQ, BATCH)
    one = dynify(BERT, BATCH + SEQ, verify=False)
    two = dynify(dynify(BERT, steps[0], verify=False).model, steps[1], verify=False)
    assert sorted(n.op_type for n in two.model.graph.node) == sorted(n.op_type for n in one.model.graph.node)


# --- version and help --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sub", [[], ["inspect"], ["fix"]])
def test_version_and_help_without_type_placeholders(cli_run, sub):
    p = cli_run(*sub, "--version")
    assert p.returncode == 0 and p.stdout.startswith("winml-dynify "), p.stderr
    h = cli_run(*sub, "--help")
    assert h.returncode == 0
    options = h.stdout.split("Options:")[1]
    assert "<bool>" not in options and "<list" not in options and "<int>" not in options, h.stdout


def test_scalar_integer_inputs_are_never_zero_in_checks(tmp_path):
    """STFT with its frame step and length as scalar inputs: a zero step crashed onnxruntime (SIGFPE)."""
    m = make_model([helper.make_node("STFT", ["signal", "step", "", "length"], ["y"])],
                   [tensor("signal", [2, 64, 1]), tensor("step", [], TensorProto.INT64),
                    tensor("length", [], TensorProto.INT64)], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                             None)])
    src = save(m, tmp_path / "stft.onnx")
    p = subprocess.run([sys.executable, "-m", "winml_dynify", src, "--axis", "signal:0=batch", "-o",
                        tmp_path / "o.onnx"], capture_output=True, text=True)  # a crash must not end the tests
    assert p.returncode in (0, 1, 3), p.stderr
    assert p.stderr.count("\n") <= 1 and "Traceback" not in p.stderr


def test_a_model_that_draws_random_numbers_is_not_verified_but_can_be_rewritten():
    """ViTMAE's patch shuffle (``RandomUniformLike``): no two runs agree, so no check could pass; the error
    says so instead of reporting a failed check, and ``--no-check`` still rewrites it."""
    m = make_model([helper.make_node("RandomUniformLike", ["x"], ["noise"]),
                    helper.make_node("Add", ["x", "noise"], ["y"])],
                   [tensor("x", [2, 4])], [tensor("y", [2, 4])])
    with pytest.raises(UsageError, match=r"'noise' \(RandomUniformLike\) draws random numbers"):
        dynify(m, ["x:0=batch"])
    assert dynify(m, ["x:0=batch"], verify=False).outputs["y"] == ["batch", 4]
