"""Real-size random-weight models for the benchmarks, exported with torch (never committed).

For each model: static TorchScript exports of the same weights at several shapes (the first one is the
model the tool rewrites, the others are the static exports it is timed against), a ``dynamic_axes``
re-export of the same weights, and a ``cases.json`` in the schema of ``fixtures/manifest.json``. A file
that already exists is kept (delete the directory to re-export).

    /work/venv-fixtures/bin/python bench/real_models.py OUT_DIR [--only bert_base,gpt2] [--big]

``--big`` also exports the > 2 GB Llama-shaped decoder (hidden 2048, 12 layers), its weights in one
external data file. ``--tiny NAMES`` exports ``dynamic_axes`` re-exports of committed tiny fixtures into
``OUT_DIR/tiny/<name>_dynamic.onnx``, each checked against the fixture's S0 model and references (same
weights). Needs torch and transformers (the ``fixtures`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))
from make_fixtures import (  # noqa: E402
    CASES_BY_NAME,
    HFWrapper,
    check_dynamic_export,
    export,
    ids_spec,
    image_spec,
    make_inputs,
    mask_spec,
    perturb_constant_parameters,
)

TEXT_SHAPES = [{"batch": 1, "seq": 128}, {"batch": 4, "seq": 128}, {"batch": 1, "seq": 32}]
IMAGE_SHAPES = [{"batch": 1}, {"batch": 4}, {"batch": 2}]


def _hf(cls, cfg, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = cls(cfg)
    perturb_constant_parameters(model, std=0.02)
    return model.eval()


def bert_base():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     attn_implementation="eager")
    specs = [ids_spec("input_ids", 30522), mask_spec(), ids_spec("token_type_ids", 2)]
    return _hf(BertModel, cfg, 1), specs, ["last_hidden_state", "pooler_output"], {}


def gpt2_small():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(n_embd=768, n_layer=12, n_head=12, use_cache=False)
    return _hf(GPT2Model, cfg, 2), [ids_spec("input_ids", 50257), mask_spec()], ["last_hidden_state"], \
        {"use_cache": False}


def _llama(hidden: int, layers: int, inter: int, heads: int, kv: int, seed: int):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                      use_cache=False, attn_implementation="sdpa")
    return _hf(LlamaModel, cfg, seed), [ids_spec("input_ids", 32000), mask_spec()], ["last_hidden_state"], \
        {"use_cache": False}


def llama_small():
    """Llama-shaped decoder of BERT-base width: hidden 768, 12 layers, 12 heads, 4 KV heads."""
    return _llama(768, 12, 2048, 12, 4, 3)


def llama_2g():
    """Llama-shaped decoder of about 2.7 GB: hidden 2048, 12 layers, MLP 5632, 16 heads, 4 KV heads."""
    return _llama(2048, 12, 5632, 16, 4, 4)


def t5_small_encoder():
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8, use_cache=False)
    return _hf(T5EncoderModel, cfg, 5), [ids_spec("input_ids", 32128), mask_spec()], ["last_hidden_state"], {}


def vit_base():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072)
    return _hf(ViTModel, cfg, 6), [image_spec(False, (224, 224))], ["last_hidden_state"], {}


def swin_tiny():
    from transformers import SwinConfig, SwinModel

    cfg = SwinConfig(image_size=224, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7)
    return _hf(SwinModel, cfg, 7), [image_spec(False, (224, 224))], ["last_hidden_state"], {}


MODELS: dict[str, Callable] = {"bert_base": bert_base, "gpt2_small": gpt2_small, "llama_small": llama_small,
                               "t5_small_encoder": t5_small_encoder, "vit_base": vit_base, "swin_tiny": swin_tiny}
BIG = {"llama_2g": llama_2g}
DYNAMO = {"gpt2_small", "llama_small", "llama_2g"}  # decoders: exported with torch.export (see _export)


def _export(wrap: torch.nn.Module, specs: list[dict], outs: list[str], dims: dict[str, int], path: Path,
            dynamic: bool = False, dynamo: bool = False) -> None:
    """The fixtures' static TorchScript export (``make_fixtures.export``), or with ``dynamic`` a
    ``dynamic_axes`` re-export of the same module under the same settings. ``dynamo``: the torch.export
    exporter at opset 18 instead, weights in one external data file (the TorchScript exporter of recent
    torch fails on transformers' vmap-built causal masks)."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if not dynamic and not dynamo:
        export(wrap, specs, outs, dims, path)
        return
    feeds = make_inputs(specs, dims, 0)
    axes = None
    if dynamic:
        axes = {s["name"]: {k: d for k, d in enumerate(s["shape"]) if isinstance(d, str)} for s in specs}
        axes.update({o: {0: "batch"} for o in outs})
    kwargs = {"dynamo": True, "opset_version": 18, "external_data": True} if dynamo else \
        {"dynamo": False, "opset_version": 17, "do_constant_folding": True}
    if dynamo and axes:  # torch.export takes dynamic_shapes (one entry: the wrapper takes *args)
        kwargs["dynamic_shapes"] = (tuple({k: torch.export.Dim.DYNAMIC for k in axes[s["name"]]} for s in specs),)
        axes = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrap, tuple(torch.from_numpy(feeds[s["name"]]) for s in specs), str(path),
                          input_names=[s["name"] for s in specs], output_names=list(outs), dynamic_axes=axes,
                          **kwargs)


def build(name: str, factory: Callable, out: Path, shapes_only_first: bool = False) -> dict:
    """Export one model; return its case entry."""
    model, specs, outs, kwargs = factory()
    wrap = HFWrapper(model, [s["name"] for s in specs], outs, **kwargs).eval()
    shapes = IMAGE_SHAPES if specs[0]["dtype"].startswith("float") else TEXT_SHAPES
    shapes = shapes[:1] if shapes_only_first else shapes
    files = []
    for dims in shapes:
        key = "_".join(f"{k}{v}" for k, v in dims.items())
        rel = f"{name}/{'s0' if not files else 'ref'}_{key}.onnx"
        _export(wrap, specs, outs, dims, out / rel, dynamo=name in DYNAMO)
        files.append({"dims": dims, "file": rel})
    case = {"name": name, "model": files[0]["file"], "s0": files[0], "references": files[1:], "inputs": specs,
            "axes": [f"{s['name']}:{k}={d}" for s in specs for k, d in enumerate(s["shape"]) if isinstance(d, str)]}
    if not shapes_only_first:
        rel = f"{name}/dynamic_axes.onnx"
        _export(wrap, specs, outs, shapes[0], out / rel, dynamic=True, dynamo=name in DYNAMO)
        case["reexport"] = rel
    return case


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", default="")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--tiny", default="", help="committed fixtures to re-export with dynamic_axes")
    args = ap.parse_args()
    for name in filter(None, args.tiny.split(",")):
        (args.out / "tiny").mkdir(parents=True, exist_ok=True)
        try:
            worst = check_dynamic_export(CASES_BY_NAME[name], args.out / "tiny")
            print(f"re-exported {name}: max abs diff {worst:.2g} against its fixture's static exports", flush=True)
        except Exception as e:  # one failure skips that fixture only (the bench then shows no re-export)
            (args.out / "tiny" / f"{name}_dynamic.onnx").unlink(missing_ok=True)
            print(f"re-export of {name} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
    if args.tiny and not args.only:
        return
    only = set(filter(None, args.only.split(",")))
    todo = {k: v for k, v in MODELS.items() if not only or k in only}
    if args.big:
        todo.update(BIG)
    cases_path = args.out / "cases.json"
    cases = {c["name"]: c for c in json.loads(cases_path.read_text())} if cases_path.is_file() else {}
    for name, factory in todo.items():
        print(f"exporting {name}", flush=True)
        try:
            cases[name] = build(name, factory, args.out, shapes_only_first=name in BIG)
        except Exception as e:  # an exporter failure skips that model only (the bench says which)
            print(f"export of {name} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        cases_path.write_text(json.dumps(list(cases.values()), indent=1))


if __name__ == "__main__":
    main()
