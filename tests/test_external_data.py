"""Models with external data: read without their weights, constants read from the file on demand, the
output given its own size-checked copy of the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import OPSET, tensor
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from winml_dynify import io
from winml_dynify.cli import app
from winml_dynify.errors import UsageError

WIDTH, ROWS = 6, 16384  # every float tensor is above io.INLINE_BYTES, so stays in its file


def _model(batch: int, seed: int = 0) -> onnx.ModelProto:
    """x[batch, 6] @ W[6, 4096] + T[batch, 4096] (T: one noisy row repeated, i.e. broadcast over batch,
    128 KiB at batch 2), then a Reshape baking batch into [batch, 128, 128], a sum over the last axis and a
    second MatMul by V[128, 512]."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((WIDTH, ROWS)).astype(np.float32)
    row = rng.standard_normal(ROWS).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.tile(row, (batch, 1)), "T"),
             numpy_helper.from_array(np.array([batch, 128, 128], np.int64), "target"),
             numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(rng.standard_normal((128, 512)).astype(np.float32), "V")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "T"], ["a"]),
             helper.make_node("Reshape", ["a", "target"], ["r"]),
             helper.make_node("ReduceSum", ["r", "axes"], ["s"], keepdims=0),
             helper.make_node("MatMul", ["s", "V"], ["y"])]
    graph = helper.make_graph(nodes, "ext", [tensor("x", [batch, WIDTH])], [tensor("y", [batch, 512])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def _save_external(model: onnx.ModelProto, path: Path, one_file: bool) -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=one_file,
                    location=f"{path.name}.weights" if one_file else None, size_threshold=1024)


def _run_file(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _cli(*args):
    """The command line, in process (exit_code, output)."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("one_file", [True, False])
def test_no_check_rewrite_keeps_weights_external_and_gives_the_output_its_own_data(tmp_path, one_file):
    src = tmp_path / "src"
    src.mkdir()
    _save_external(_model(2), src / "m.onnx", one_file)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "out" / "d.onnx"
    p = _cli(src / "m.onnx", "--axis", "x:0=batch", "-o", out, "--no-check")
    assert p.exit_code == 0, p.output
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # the input and its data untouched
    written = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == ({"d.onnx.data"} if one_file else {"d.onnx.data.d/W", "d.onnx.data.d/V"})
    assert "T" not in {t.name for t in written.graph.initializer}  # the broadcast table was read and rebuilt
    for f in list(src.iterdir()):
        f.unlink()  # the output's data is its own
    x = np.random.default_rng(1).standard_normal((3, WIDTH)).astype(np.float32)
    truth = _model(3)
    ref = tmp_path / "ref.onnx"
    onnx.save(truth, str(ref))
    np.testing.assert_allclose(_run_file(out, x), _run_file(ref, x), rtol=1e-5, atol=1e-4)


def test_verified_rewrite_of_an_external_model_reads_its_weights(tmp_path):
    _save_external(_model(2), tmp_path / "m.onnx", True)
    out = tmp_path / "d.onnx"
    p = _cli(tmp_path / "m.onnx", "--axis", "x:0=batch", "-o", out, "--check-shapes", "batch=1,3")
    assert p.exit_code == 0, p.output
    assert (tmp_path / "d.onnx.data").is_file()


def test_read_without_weights_inlines_only_small_tensors(tmp_path):
    _save_external(_model(2), tmp_path / "m.onnx", True)
    model, external = io.read(tmp_path / "m.onnx", weights=False)
    kept = {t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert external and kept == {"W", "T", "V"}
    with pytest.raises(UsageError, match="folder is unknown"):
        io.tensor_array(model.graph.initializer[0])
    with io.external_dir(tmp_path):
        assert io.tensor_array(model.graph.initializer[0]).shape == (WIDTH, ROWS)


def test_a_truncated_data_file_is_an_error_and_nothing_is_written(tmp_path):
    _save_external(_model(2), tmp_path / "m.onnx", True)
    data = tmp_path / "m.onnx.weights"
    data.write_bytes(data.read_bytes()[: 100_000])
    out = tmp_path / "d.onnx"
    model, _ = io.read(tmp_path / "m.onnx", weights=False)
    with pytest.raises(UsageError, match="reaches byte"):
        io.save(model, out, data_dir=tmp_path)
    assert not out.exists() and not (tmp_path / "d.onnx.data").exists()


def test_output_data_may_not_be_the_inputs_data(tmp_path):
    model = _model(2)
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="d.onnx.data", size_threshold=1024)
    loaded, _ = io.read(tmp_path / "m.onnx", weights=False)
    with pytest.raises(UsageError, match="input's own data"):
        io.save(loaded, tmp_path / "d.onnx", data_dir=tmp_path)
    assert onnx.load(str(tmp_path / "m.onnx")).graph.initializer[0].dims == [WIDTH, ROWS]
