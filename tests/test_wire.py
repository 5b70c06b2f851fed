"""Weights located in an ONNX file's bytes, and sessions built from a view that points at them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model, tensor
from onnx import TensorProto, helper

from winml_dynify.wire import VIEW_BYTES, file_view, raw_data_ranges


def _model(rng) -> onnx.ModelProto:
    """Two large weights (one float, one int64 table) and one small bias."""
    return make_model([helper.make_node("Gather", ["table", "ids"], ["rows"]),
                       helper.make_node("Cast", ["rows"], ["f"], to=TensorProto.FLOAT),
                       helper.make_node("MatMul", ["f", "w"], ["h"]),
                       helper.make_node("Add", ["h", "b"], ["y"])],
                      [tensor("ids", [2, 3], TensorProto.INT64)], [tensor("y", [2, 3, 64])],
                      {"table": rng.integers(-5, 5, (50, 32)).astype(np.int64),
                       "w": rng.standard_normal((32, 64)).astype(np.float32),
                       "b": rng.standard_normal(64).astype(np.float32)})


def _run(model: bytes | str, folder: str | None = None) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if folder is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"ids": np.array([[0, 7, 49], [3, 3, 1]], np.int64)})[0]


def test_ranges_hold_each_initializers_raw_bytes(rng, tmp_path):
    m = _model(rng)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    ranges = raw_data_ranges(path)
    data = path.read_bytes()
    assert set(ranges) == {"table", "w", "b"}
    for t in m.graph.initializer:
        at, n = ranges[t.name]
        assert data[at:at + n] == t.raw_data


def test_a_view_loads_the_weights_from_the_file_and_keeps_small_tensors(rng, tmp_path):
    m = _model(rng)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    view = file_view(m, path)
    assert view is not None
    parsed = onnx.ModelProto.FromString(view)
    where = {t.name: t.data_location for t in parsed.graph.initializer}
    assert where == {"table": TensorProto.EXTERNAL, "w": TensorProto.EXTERNAL, "b": TensorProto.DEFAULT}
    assert VIEW_BYTES > 64 * 4  # the bias stays inline
    np.testing.assert_array_equal(_run(view, str(tmp_path)), _run(str(path)))


def test_a_file_that_does_not_hold_the_models_weights_gives_no_view(rng, tmp_path):
    m = _model(rng)
    path = tmp_path / "m.onnx"
    other = onnx.ModelProto()
    other.CopyFrom(m)
    other.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(np.zeros((16, 64), np.float32), "w"))
    other.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.zeros((50, 31), np.int64), "table"))
    onnx.save(other, path)
    assert file_view(m, path) is None  # sizes differ: nothing is pointed at, the caller loads the file


def test_duplicate_names_and_broken_files(rng, tmp_path):
    m = _model(rng)
    m.graph.initializer.append(m.graph.initializer[1])  # "w" twice: which one a reader takes is unclear
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    assert set(raw_data_ranges(path)) == {"table", "b"}
    path.write_bytes(m.SerializeToString()[:-300])
    with pytest.raises(ValueError):
        raw_data_ranges(path)
    assert file_view(m, path) is None
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert raw_data_ranges(empty) == {}
