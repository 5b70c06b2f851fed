"""Side-by-side figures in one run: dynified vs static latency on onnxruntime at the exported shape,
and rewrite time (analysis + rewrite, no verification) vs a plain load + save of the same model.

    python bench/bench.py        (make bench)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))
from make_inputs import input_seed, make_inputs  # noqa: E402

from winml_dynify import dynify  # noqa: E402

CASES = ["bert_tiny", "gpt2", "llama", "mobilenetv2_batch", "resnet_hw"]


def latency(model: bytes, feeds: dict, runs: int = 200) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(10):
        sess.run(None, feeds)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def main() -> None:
    cases = {c["name"]: c for c in json.loads((ROOT / "fixtures" / "manifest.json").read_text())["cases"]}
    print(f"{'case':<20}{'static ms':>10}{'dynamic ms':>12}{'ratio':>8}"
          f"{'load+save ms':>14}{'dynify ms':>11}{'ratio':>8}")
    for name in CASES:
        case = cases[name]
        path = ROOT / "fixtures" / case["model"]
        feeds = make_inputs(case["inputs"], case["s0"]["dims"], input_seed(name, case["s0"]["dims"]))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for _ in range(5):
                onnx.save(onnx.load(path), f"{tmp}/m.onnx")
            base = (time.perf_counter() - t0) / 5
            t0 = time.perf_counter()
            for _ in range(5):
                res = dynify(path, case["axes"], verify=False)
                onnx.save(res.model, f"{tmp}/d.onnx")
            rw = (time.perf_counter() - t0) / 5
        static = latency(path.read_bytes(), feeds)
        dyn = latency(res.model.SerializeToString(), feeds)
        print(f"{name:<20}{static * 1e3:>10.3f}{dyn * 1e3:>12.3f}{dyn / static:>8.2f}"
              f"{base * 1e3:>14.1f}{rw * 1e3:>11.1f}{rw / base:>8.1f}")


if __name__ == "__main__":
    main()
