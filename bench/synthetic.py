"""Generated models for the cost benchmarks: a long chain of transformer-like blocks of any node count, and
a Llama-shaped decoder of any size with its weights in external data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, HEADS = 16, 4


def chain_model(n_nodes: int, seq: int = 8) -> onnx.ModelProto:
    """A [1, seq, 16] input through blocks of MatMul, Add, Reshape to heads, Transpose, Reshape back, Relu
    (8 nodes each with the two Constant targets, as torch exports them) until ``n_nodes``; every Reshape
    target bakes ``seq``. opset 17, IR 8."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.1, "w")
    bias = numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32) * 0.1, "b")
    heads = numpy_helper.from_array(np.array([1, seq, HEADS, HIDDEN // HEADS], np.int64))
    flat = numpy_helper.from_array(np.array([1, seq, HIDDEN], np.int64))
    nodes, x = [], "x"
    for k in range(max(1, n_nodes // 8)):
        p = f"b{k}_"
        nodes += [
            helper.make_node("Constant", [], [p + "heads"], name=p + "c1", value=heads),
            helper.make_node("Constant", [], [p + "flat"], name=p + "c2", value=flat),
            helper.make_node("MatMul", [x, "w"], [p + "mm"], name=p + "mm"),
            helper.make_node("Add", [p + "mm", "b"], [p + "add"], name=p + "add"),
            helper.make_node("Reshape", [p + "add", p + "heads"], [p + "r1"], name=p + "r1"),
            helper.make_node("Transpose", [p + "r1"], [p + "t"], name=p + "t", perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [p + "t", p + "flat"], [p + "r2"], name=p + "r2"),
            helper.make_node("Relu", [p + "r2"], [p + "y"], name=p + "y"),
        ]
        x = p + "y"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, HIDDEN])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, HIDDEN])],
                              [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def llama_external(folder: Path, hidden: int = 2048, layers: int = 12, inter: int = 5632, heads: int = 16,
                   vocab: int = 32000, seq: int = 160) -> Path:
    """A Llama-shaped decoder (RMSNorm, attention with a folded causal mask, gated MLP; batch 1 and ``seq``
    baked into every Reshape) whose weights live in external data, one file per tensor as torch writes it.
    The defaults make 2.7 GB of weights. The weights are one random block tiled at a different scale per
    tensor (their values do not matter for the cost of a rewrite), written chunk by chunk. Returns the
    model's path (``folder/model.onnx``); an existing one is kept."""
    path = folder / "model.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32) * 0.02
    inits: list[onnx.TensorProto] = []

    def weight(name: str, shape: list[int]) -> str:
        n = int(np.prod(shape))
        with open(folder / name, "wb") as f:
            for start in range(0, n, block.size):
                (block[: min(block.size, n - start)] * (1 + len(inits) % 7 * 0.1)).tofile(f)
        t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape,
                             data_location=TensorProto.EXTERNAL)
        for key, value in (("location", name), ("offset", "0"), ("length", str(n * 4))):
            t.external_data.add(key=key, value=value)
        inits.append(t)
        return name

    def small(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    hd = hidden // heads
    mask = np.triu(np.full((seq, seq), np.finfo(np.float32).min, np.float32), 1)[None, None]
    consts = {"eps": small("eps", np.array(1e-6, np.float32)), "scale": small("scale", np.array(hd**-0.5, np.float32)),
              "mask": small("mask", mask),
              "heads": small("to_heads", np.array([1, seq, heads, hd], np.int64)),
              "flat": small("to_flat", np.array([1, seq, hidden], np.int64))}
    nodes: list[onnx.NodeProto] = []

    def op(kind: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, ins, [out], name=out, **attrs))
        return out

    def norm(x: str, p: str) -> str:
        ms = op("ReduceMean", [op("Mul", [x, x], p + "sq")], p + "ms", axes=[-1])
        rms = op("Sqrt", [op("Add", [ms, consts["eps"]], p + "mse")], p + "rms")
        return op("Mul", [op("Div", [x, rms], p + "n"), weight(p + "weight", [hidden])], p + "out")

    x = op("Gather", [weight("embed_tokens.weight", [vocab, hidden]), "input_ids"], "embeds")
    for k in range(layers):
        p = f"layers.{k}."
        h = norm(x, p + "input_norm.")
        qkv = []
        for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            mm = op("MatMul", [h, weight(f"{p}{name}_proj.weight", [hidden, hidden])], f"{p}{name}")
            qkv.append(op("Transpose", [op("Reshape", [mm, consts["heads"]], f"{p}{name}_heads")], f"{p}{name}_t",
                          perm=perm))
        scores = op("Add", [op("Mul", [op("MatMul", qkv[:2], p + "qk"), consts["scale"]], p + "scaled"),
                            consts["mask"]], p + "masked")
        ctx = op("MatMul", [op("Softmax", [scores], p + "probs", axis=-1), qkv[2]], p + "ctx")
        ctx = op("Reshape", [op("Transpose", [ctx], p + "ctx_t", perm=[0, 2, 1, 3]), consts["flat"]], p + "ctx_flat")
        x = op("Add", [x, op("MatMul", [ctx, weight(p + "o_proj.weight", [hidden, hidden])], p + "attn")], p + "res1")
        h = norm(x, p + "post_norm.")
        gate = op("MatMul", [h, weight(p + "gate_proj.weight", [hidden, inter])], p + "gate")
        up = op("MatMul", [h, weight(p + "up_proj.weight", [hidden, inter])], p + "up")
        act = op("Mul", [op("Mul", [gate, op("Sigmoid", [gate], p + "sig")], p + "silu"), up], p + "act")
        x = op("Add", [x, op("MatMul", [act, weight(p + "down_proj.weight", [inter, hidden])], p + "mlp")], p + "res2")
    out = norm(x, "norm.")
    graph = helper.make_graph(nodes, "llama_external", [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                                                                    [1, seq])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, seq, hidden])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path
