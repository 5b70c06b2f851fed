"""One measured run in a fresh process; prints {"wall_s", "cpu_s", "rss_mb"} as JSON (the peak RSS is the
whole process's, imports included; the times cover the work only).

    python bench/cost_probe.py loadsave  MODEL OUT           onnx.load + onnx.save (weights included; written
                                                             as one external data file if they were external)
    python bench/cost_probe.py graphonly MODEL OUT           onnx.load(load_external_data=False) + onnx.save
    python bench/cost_probe.py graphcopy MODEL OUT           the same, plus a copy of every external data
                                                             file beside OUT (the floor for an output that
                                                             owns its weights)
    python bench/cost_probe.py dynify    MODEL OUT AXIS...   winml-dynify MODEL --axis AXIS... -o OUT --no-check
    python bench/cost_probe.py verify    MODEL OUT AXIS...   the same with verification
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import onnx

from winml_dynify.budget import peak_rss_mb


def main() -> None:
    mode, model, out, *axes = sys.argv[1:]
    if mode in ("dynify", "verify"):
        from winml_dynify.cli import main as cli

        sys.argv = ["winml-dynify", model, *[f"--axis={a}" for a in axes], "-o", out, "-q"]
        sys.argv += ["--no-check"] if mode == "dynify" else []
    t0, c0 = time.perf_counter(), time.process_time()
    if mode in ("loadsave", "graphonly", "graphcopy"):
        m = onnx.load(model, load_external_data=False)
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
        if mode == "graphcopy":
            src, dst = os.path.dirname(os.path.abspath(model)), os.path.dirname(os.path.abspath(out))
            files = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
            for f in files:
                os.makedirs(os.path.dirname(os.path.join(dst, f)) or dst, exist_ok=True)
                shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
        if mode == "loadsave" and external:
            onnx.load_external_data_for_model(m, os.path.dirname(os.path.abspath(model)))
        onnx.save(m, out, save_as_external_data=mode == "loadsave" and external,
                  location=os.path.basename(out) + ".data")
    else:
        try:
            cli()
        except SystemExit as e:
            if e.code:
                raise
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_mb()
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_mb": rss}))


if __name__ == "__main__":
    main()
