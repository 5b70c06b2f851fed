"""Exports that are not among the fixtures, checked the way a user meets them: each model is exported
static at one shape and at three others (same weights), the static one is dynified by the CLI with
verification, and the result is compared with the other exports on onnxruntime.

    .venv-fixtures/bin/python bench/sweep.py OUT [--only NAME,...] [--list]

Needs the ``fixtures`` extra (torch, transformers, timm, torchvision, ultralytics). Prints one line per
model: ``ok`` per reference shape, ``WRONG`` (a number or a shape off: the worst outcome), ``CRASH``, or
the refusal's message (a request the CLI refuses, for image models also retried with batch alone; one that
asks for ``--reference`` also retried with one of the other exports, compared on the rest).
Nothing is written outside OUT; the exports are not fixtures and are not committed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))
sys.path.insert(0, str(ROOT / "fixtures" / "vision"))
CLI = str(Path(sys.executable).parent / "winml-dynify")
if not Path(CLI).exists():
    CLI = str(ROOT / ".venv" / "bin" / "winml-dynify")

TEXT = ({"batch": 1, "seq": 16}, [{"batch": 2, "seq": 16}, {"batch": 1, "seq": 7}, {"batch": 3, "seq": 24}])
AUDIO = ({"batch": 1, "seq": 400}, [{"batch": 2, "seq": 400}, {"batch": 1, "seq": 320}, {"batch": 3, "seq": 560}])
IMAGE = ({"batch": 1, "height": 64, "width": 64},
         [{"batch": 2, "height": 64, "width": 64}, {"batch": 1, "height": 96, "width": 128},
          {"batch": 2, "height": 128, "width": 128}])
YOLO = ({"batch": 1, "height": 256, "width": 320},
        [{"batch": 2, "height": 256, "width": 320}, {"batch": 1, "height": 320, "width": 192},
         {"batch": 2, "height": 384, "width": 256}])
from make_fixtures import dims_tag  # noqa: E402

SMALL = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 64}


def _hf(model: str, config: str, kind: str = "decoder", attn: str = "eager", **kw):
    """A transformers model from a small config: ``decoder`` (ids, mask), ``encoder`` (ids, mask), ``audio``."""
    def build():
        import transformers
        from make_fixtures import HFWrapper, _hf, float_spec, ids_spec, mask_spec

        base = {} if kind == "audio" else SMALL
        cfg = getattr(transformers, config)(**{**base, **kw})
        cfg._attn_implementation = attn
        hf = _hf(getattr(transformers, model), cfg, 7)
        if kind == "audio":
            inputs = [float_spec("input_values", ["batch", "seq"])]
        else:
            inputs = [ids_spec("input_ids", 100), mask_spec()]
        extra = {"use_cache": False} if kind == "decoder" else {}
        names = [i["name"] for i in inputs]
        return HFWrapper(hf, names, ["last_hidden_state"], **extra), inputs, AUDIO if kind == "audio" else TEXT
    return build


def _timm(name: str, **kw):
    def build():
        import timm
        import torch
        from make_fixtures import float_spec, perturb_constant_parameters, randomise_batchnorm

        torch.manual_seed(0)
        m = timm.create_model(name, pretrained=False, **kw).eval()
        perturb_constant_parameters(m)
        randomise_batchnorm(m)
        return m, [float_spec("x", ["batch", 3, "height", "width"])], IMAGE
    return build


def _yolo(cfg: str, scale: list[float], seed: int):
    def build():
        from make_vision_fixtures import ultralytics_model

        return ultralytics_model(cfg, scale, 3, seed), None, YOLO
    return build


AUDIO_CONV = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
              "conv_dim": (16, 16), "conv_stride": (5, 4), "conv_kernel": (10, 8), "num_conv_pos_embeddings": 16,
              "num_conv_pos_embedding_groups": 4}
MODELS: dict[str, Callable] = {
    "gpt_neox": _hf("GPTNeoXModel", "GPTNeoXConfig", rotary_pct=0.5),
    "stablelm": _hf("StableLmModel", "StableLmConfig", num_key_value_heads=2, partial_rotary_factor=0.5),
    "olmo": _hf("OlmoModel", "OlmoConfig"),
    "gemma": _hf("GemmaModel", "GemmaConfig", head_dim=8, num_key_value_heads=1),
    "granite": _hf("GraniteModel", "GraniteConfig", num_key_value_heads=2),
    "starcoder2": _hf("Starcoder2Model", "Starcoder2Config", num_key_value_heads=2),
    "qwen3": _hf("Qwen3Model", "Qwen3Config", num_key_value_heads=2, head_dim=8),
    "mistral_window8": _hf("MistralModel", "MistralConfig", num_key_value_heads=2, sliding_window=8),
    "mistral_window8_sdpa": _hf("MistralModel", "MistralConfig", attn="sdpa", num_key_value_heads=2,
                                sliding_window=8),
    "gemma2_window8": _hf("Gemma2Model", "Gemma2Config", num_key_value_heads=2, head_dim=8, sliding_window=8),
    "llama_sdpa": _hf("LlamaModel", "LlamaConfig", attn="sdpa", num_key_value_heads=2),
    "squeezebert": _hf("SqueezeBertModel", "SqueezeBertConfig", "encoder", embedding_size=32),
    "rembert": _hf("RemBertModel", "RemBertConfig", "encoder", input_embedding_size=16, output_embedding_size=16),
    "data2vec_text": _hf("Data2VecTextModel", "Data2VecTextConfig", "encoder", pad_token_id=1),
    "sew": _hf("SEWModel", "SEWConfig", "audio", **AUDIO_CONV),
    "wavlm": _hf("WavLMModel", "WavLMConfig", "audio", **AUDIO_CONV),
    "pvt_v2": _timm("pvt_v2_b0"),
    "twins_pcpvt": _timm("twins_pcpvt_small"),
    "fastvit": _timm("fastvit_t8"),
    "repvit": _timm("repvit_m1"),
    "efficientvit": _timm("efficientvit_b0"),
    "hrnet": _timm("hrnet_w18_small"),
    "dla34": _timm("dla34"),
    "res2net": _timm("res2net50_14w_8s"),
    "tresnet": _timm("tresnet_m"),
    "xcit": _timm("xcit_nano_12_p16_224"),
    "yolov10n": _yolo("yolov10n.yaml", [0.33, 0.0625, 256], 21),
    "yolov9t": _yolo("yolov9t.yaml", [0.33, 0.0625, 256], 22),
    "yolov8n_p2": _yolo("yolov8-p2.yaml", [0.33, 0.0625, 256], 26),
    "yolo12n": _yolo("yolo12n.yaml", [0.5, 0.25, 1024], 25),
}


def _export(model, inputs, dims: dict[str, int], path: Path) -> None:
    if inputs is None:  # an ultralytics model: its own exporter, as users run it
        from make_vision_fixtures import export_ultralytics

        export_ultralytics(model, dims, path)
    else:
        from make_fixtures import export

        export(model, inputs, ["y"], dims, path)


def _feeds(session: ort.InferenceSession, inputs, dims: dict[str, int]) -> dict[str, np.ndarray]:
    if inputs is None:
        x = np.random.default_rng(3).random((dims["batch"], 3, dims["height"], dims["width"]), dtype=np.float32)
        return {session.get_inputs()[0].name: x}
    from make_inputs import make_inputs

    feeds = make_inputs(inputs, dims, 3)
    return {i.name: feeds[i.name] for i in session.get_inputs()}


def _cli(model: Path, axes: list[str], out: Path, references: list[Path] = ()) -> subprocess.CompletedProcess:
    flags = [f for a in axes for f in ("--axis", a)] + [f for r in references for f in ("--reference", str(r))]
    return subprocess.run([CLI, str(model), *flags, "-o", str(out), "-q"],
                          capture_output=True, text=True)


def _compare(out: Path, folder: Path, inputs, refs: list[dict[str, int]]) -> str:
    dyn = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    verdicts = []
    for r in refs:
        ref = ort.InferenceSession(str(folder / f"ref_{dims_tag(r)}.onnx"), providers=["CPUExecutionProvider"])
        feeds = _feeds(ref, inputs, r)
        want = ref.run(None, feeds)
        try:
            got = dyn.run(None, feeds)
        except Exception as e:  # onnxruntime's exception types vary by version
            verdicts.append(f"{dims_tag(r)} CRASH {str(e).splitlines()[0][:120]}")
            continue
        bad = any(w.shape != g.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-3)
                  for w, g in zip(want, got, strict=True))
        verdicts.append(f"{dims_tag(r)} {'WRONG' if bad else 'ok'}")
    return "; ".join(verdicts)


def check(name: str, out_root: Path) -> str:
    """One model's line: exported, dynified with every symbolic axis, compared at each reference shape."""
    model, inputs, (s0, refs) = MODELS[name]()
    folder = out_root / name
    folder.mkdir(parents=True, exist_ok=True)
    _export(model, inputs, s0, folder / "s0.onnx")
    for r in refs:
        _export(model, inputs, r, folder / f"ref_{dims_tag(r)}.onnx")
    s0_session = ort.InferenceSession(str(folder / "s0.onnx"), providers=["CPUExecutionProvider"])
    if inputs is None:
        name0 = s0_session.get_inputs()[0].name
        axes = [f"{name0}:0=batch", f"{name0}:2=height", f"{name0}:3=width"]
    else:
        axes = [f"{s['name']}:{k}={d}" for s in inputs for k, d in enumerate(s["shape"]) if isinstance(d, str)]
    done = _cli(folder / "s0.onnx", axes, folder / "dyn.onnx")
    if done.returncode == 0:
        return _compare(folder / "dyn.onnx", folder, inputs, refs)
    line = f"refused (exit {done.returncode}): {done.stderr.strip().splitlines()[-1][7:260]}"
    if "--reference" in done.stderr:  # a split only another export decides: give it the one moving most sizes
        given = max(refs, key=lambda r: sum(v != s0[k] for k, v in r.items() if k != "batch"))
        again = _cli(folder / "s0.onnx", axes, folder / "dyn_ref.onnx", [folder / f"ref_{dims_tag(given)}.onnx"])
        line += f" || with --reference {dims_tag(given)}: " + (
            _compare(folder / "dyn_ref.onnx", folder, inputs, [r for r in refs if r is not given])
            if again.returncode == 0 else f"refused ({again.stderr.strip().splitlines()[-1][7:200]})")
    alone = [a for a in axes if a.endswith("=batch")]
    if len(alone) < len(axes):
        same = [r for r in refs if all(r[k] == s0[k] for k in s0 if k != "batch")]
        again = _cli(folder / "s0.onnx", alone, folder / "dyn_batch.onnx")
        line += " || batch alone: " + (_compare(folder / "dyn_batch.onnx", folder, inputs, same)
                                       if again.returncode == 0 else f"refused (exit {again.returncode})")
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        print("\n".join(MODELS))
        return 0
    os.environ.setdefault("YOLO_OFFLINE", "1")
    names = [n for n in args.only.split(",") if n] or list(MODELS)
    wrong = 0
    for name in names:
        try:
            line = check(name, args.out)
        except Exception as e:  # an export the producer itself cannot make is the producer's limit
            line = f"not exported ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        wrong += "WRONG" in line or "CRASH" in line
        print(f"{name}: {line}", flush=True)
    print(f"{len(names)} models, {wrong} wrong or crashed")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
