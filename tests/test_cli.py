"""The CLI contract: exit codes, one-line errors, atomic output, the input never written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import FIXTURES

BERT = FIXTURES / "bert_tiny" / "s0_batch1_seq16.onnx"
AXES = ["--axis", "input_ids:0=batch", "--axis", "input_ids:1=seq", "--axis", "attention_mask:0=batch",
        "--axis", "attention_mask:1=seq", "--axis", "token_type_ids:0=batch", "--axis", "token_type_ids:1=seq"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "winml_dynify", *map(str, args)], capture_output=True, text=True)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_success_writes_output_and_report_and_leaves_input(tmp_path):
    before = digest(BERT)
    out, rep = tmp_path / "m.onnx", tmp_path / "r.json"
    p = cli(BERT, *AXES, "-o", out, "--report", rep)
    assert p.returncode == 0, p.stderr
    assert digest(BERT) == before
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in onnx.load(out).graph.input}
    assert dims["input_ids"] == ["batch", "seq"]
    report = json.loads(rep.read_text())
    oracles = {c["oracle"] for c in report["verification"]["checks"]}
    assert {"original", "per-sample", "padding"} <= oracles
    assert all(c["status"] != "failed" for c in report["verification"]["checks"])
    assert "verification on CPUExecutionProvider" in p.stdout


def test_default_output_path_is_beside_the_model(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(BERT.read_bytes())
    assert cli(src, *AXES, "--no-check").returncode == 0
    assert (tmp_path / "model.dynamic.onnx").is_file()


def test_second_run_with_same_symbols_is_a_no_op(tmp_path):
    out = tmp_path / "m.onnx"
    assert cli(BERT, *AXES, "-o", out, "--no-check").returncode == 0
    p = cli(out, *AXES, "-o", tmp_path / "again.onnx", "--no-check")
    assert p.returncode == 0, p.stderr
    assert "already has its symbol" in p.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--axis", "nope:0=batch"], "unknown input 'nope'"),
    (["--axis", "input_ids:2=batch"], "out of range"),
    (["--axis", "input_ids:-3=batch"], "out of range"),
    (["--axis", "input_ids0=batch"], "malformed --axis"),
    (["--axis", "input_ids:0=batch", "--axis", "input_ids:1=batch"], "different static sizes"),
    ([], "no axes requested"),
    (["--axis", "input_ids:0=batch", "--check-shapes", "batch=x"], "malformed --check-shapes"),
    (["--axis", "input_ids:0=batch", "--ep", "NoSuchExecutionProvider"], "not available"),
    (["--axis", "input_ids:0=batch", "--max", "batch"], "malformed --max"),
    (["--axis", "input_ids:0=batch", "--max", "seq=64"], "--max seq=64: unknown symbol"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, needle):
    out = tmp_path / "m.onnx"
    p = cli(BERT, *args, "-o", out)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()


def test_dim_already_symbolic_under_another_name(tmp_path):
    out = tmp_path / "m.onnx"
    assert cli(BERT, *AXES, "-o", out, "--no-check").returncode == 0
    p = cli(out, "--axis", "input_ids:0=N", "-o", tmp_path / "x.onnx")
    assert p.returncode == 2 and "already symbolic as 'batch'" in p.stderr


@pytest.mark.parametrize("content", [None, b"not a protobuf \x00\xff\x12"])
def test_missing_or_corrupt_model(tmp_path, content):
    src = tmp_path / "bad.onnx"
    if content is not None:
        src.write_bytes(content)
    p = cli(src, "--axis", "x:0=batch", "-o", tmp_path / "o.onnx")
    assert p.returncode == 2
    assert ("not found" if content is None else "cannot read") in p.stderr
    assert "Traceback" not in p.stderr


def test_refusal_exits_3_and_writes_nothing(tmp_path):
    vit = next((FIXTURES / "vit_hw").glob("s0_*.onnx"))
    out = tmp_path / "o.onnx"
    p = cli(vit, "--axis", "pixel_values:2=height", "--axis", "pixel_values:3=width", "-o", out)
    assert p.returncode == 3
    assert "position_embeddings" in p.stderr
    assert not out.exists()


def test_refusal_names_inputs_left_static_at_the_same_size(tmp_path):
    """seq on input_ids alone: the mask and token types stay 16 and the model adds them up; the refusal
    says which flags would tie them."""
    p = cli(BERT, "--axis", "input_ids:1=seq", "-o", tmp_path / "o.onnx")
    assert p.returncode == 3
    assert "--axis attention_mask:1=seq --axis token_type_ids:1=seq" in p.stderr
    p = cli(BERT, "--axis", "input_ids:1=seq", "--axis", "attention_mask:1=seq", "--axis", "token_type_ids:1=seq",
            "-o", tmp_path / "o.onnx", "--no-check")
    assert p.returncode == 0, p.stderr


def test_axes_json_matches_axis_flags(tmp_path):
    spec = tmp_path / "axes.json"
    spec.write_text(json.dumps({"dynamic_axes": {n: {"0": "batch", "1": "seq"}
                                                 for n in ("input_ids", "attention_mask", "token_type_ids")}}))
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert cli(BERT, *AXES, "-o", a, "--no-check").returncode == 0
    assert cli(BERT, "--axes-json", spec, "-o", b, "--no-check").returncode == 0
    assert onnx.load(a).SerializeToString() == onnx.load(b).SerializeToString()


def test_external_data_model_keeps_its_weights(tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(BERT), str(src), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    out = tmp_path / "out" / "dyn.onnx"
    p = cli(src, *AXES, "-o", out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert (out.parent / "dyn.onnx.data").stat().st_size > 0.8 * (tmp_path / "ext.onnx.data").stat().st_size
    raw = onnx.load(out, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in raw.graph.initializer)
    onnx.checker.check_model(str(out))


def test_console_script_runs_the_main_command_and_the_inspect_subcommand(tmp_path):
    exe = Path(sys.executable).with_name("winml-dynify")
    if not exe.is_file():
        pytest.skip("the winml-dynify console script is not installed beside this interpreter")
    out = tmp_path / "m.onnx"
    p = subprocess.run([str(exe), str(BERT), *AXES, "-o", str(out), "--no-check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.is_file()
    p = subprocess.run([str(exe), "inspect", str(BERT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("inputs:\n  input_ids ")
    assert "--dynamic-batch --dynamic-seq: " in p.stdout


def test_help_names_the_presets_target_and_inspect():
    p = cli("--help")
    assert p.returncode == 0
    for flag in ("--dynamic-batch", "--dynamic-seq", "--dynamic-image", "--target", "inspect MODEL"):
        assert flag in p.stdout
