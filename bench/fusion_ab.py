"""Time a real-size model with one onnxruntime fusion on and off, beside its re-export, sessions in turn.

    .venv/bin/python bench/fusion_ab.py bert_base 1 32 --runs 60
    .venv/bin/python bench/fusion_ab.py bert_base 1 128 --fusion SkipLayerNormFusion --runs 20

Reads ``BENCH_CACHE/MODEL`` as ``bench/real_models.py`` writes it (the static export at the shape, its
``dynamic_axes`` re-export); the dynified model is made from the (1,128) export. One thread, medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench import CACHE, _session
from winml_dynify import dynify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("batch", type=int)
    ap.add_argument("seq", type=int)
    ap.add_argument("--fusion", default="SkipLayerNormFusion")
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    d = CACHE / args.model
    reexport = _session(str(d / "dynamic_axes.onnx"))
    names = [i.name for i in reexport.get_inputs()]
    axes = [f"{n}:{a}={s}" for n in names for a, s in ((0, "batch"), (1, "seq"))]
    dyn = dynify(d / "s0_batch1_seq128.onnx", axes, verify=False).model.SerializeToString()
    shape = f"batch{args.batch}_seq{args.seq}"
    static = str(next(p for p in d.glob(f"*_{shape}.onnx")))
    off = [args.fusion]
    sessions = {"dynified": _session(dyn), f"dynified, {args.fusion} off": _session(dyn, disabled=off),
                "re-export": reexport, "static": _session(static),
                f"static, {args.fusion} off": _session(static, disabled=off)}
    rng = np.random.default_rng(0)
    feeds = {n: (rng.integers(0, 1000, (args.batch, args.seq)) if n == "input_ids" else
                 np.ones((args.batch, args.seq), np.int64) if n == "attention_mask" else
                 np.zeros((args.batch, args.seq), np.int64)) for n in names}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(args.runs + 2):
        for k in list(sessions) if r % 2 else list(sessions)[::-1]:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds)
            if r >= 2:
                times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        print(f"{k}: {statistics.median(v) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
