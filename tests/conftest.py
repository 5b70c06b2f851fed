"""Shared helpers: small hand-built graphs (pinned IR version and opset) and onnxruntime runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
OPSET = 17


def make_model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def tensor(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def mask_gather_model(cols: np.ndarray) -> onnx.ModelProto:
    """transformers' padding mask as traced at batch 1: ``Flatten(mask)[cols + [[[[0]]]] * seq]`` (the
    batch arange folded to a zero), reshaped to the index's shape; ``cols`` holds 16 column indices."""
    nodes = [helper.make_node("Flatten", ["mask"], ["flat"], axis=2),
             helper.make_node("Shape", ["mask"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["seq"]),
             helper.make_node("Mul", ["zero", "seq"], ["off"]),
             helper.make_node("Add", ["cols", "off"], ["idx"]),
             helper.make_node("Gather", ["flat", "idx"], ["g"]),
             helper.make_node("Shape", ["idx"], ["ishape"]),
             helper.make_node("Reshape", ["g", "ishape"], ["y"])]
    return make_model(nodes, [tensor("mask", [1, 16], TensorProto.INT64)],
                      [tensor("y", [1, 1, 1, 16], TensorProto.INT64)],
                      {"one": np.array([1], np.int64), "zero": np.zeros((1, 1, 1, 1), np.int64),
                       "cols": cols.reshape(1, 1, 1, 16)})


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def manifest_cases() -> list[dict]:
    """Cases of fixtures/manifest.json (torch exports), fixtures/winml/manifest.json (winml export) and
    fixtures/vision/manifest.json (ultralytics, timm, torchvision)."""
    cases = []
    for manifest in (FIXTURES / "manifest.json", FIXTURES / "winml" / "manifest.json",
                     FIXTURES / "vision" / "manifest.json"):
        if manifest.is_file():
            for c in json.loads(manifest.read_text())["cases"]:
                cases.append({**c, "root": manifest.parent})
    return cases


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
