"""Fitting the winml pipeline: the sidecar and hierarchy tags kept true, dynamic_axes output checks,
presets, ``inspect`` / ``inspect_model`` and the ``--target`` policy."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import FIXTURES, make_model, tensor
from onnx import TensorProto, helper

from winml_dynify import dynify, inspect_model, sidecar
from winml_dynify.errors import UsageError
from winml_dynify.presets import select, select_batch, select_image, select_seq

WINML_BERT = FIXTURES / "bert_tiny_winml" / "s0_batch1_seq16.onnx"
WINML_RESNET = FIXTURES / "resnet_winml" / "s0_batch1.onnx"
REAL_BERT = FIXTURES / "winml" / "bert" / "s0_batch1_seq16.onnx"
BERT = FIXTURES / "bert_tiny" / "s0_batch1_seq16.onnx"
TOKENS = ("input_ids", "attention_mask", "token_type_ids")
AXES = [a for n in TOKENS for a in ("--axis", f"{n}:0=batch", "--axis", f"{n}:1=seq")]


def cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "winml_dynify", *map(str, args)], capture_output=True, text=True)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


# --- sidecar and hierarchy tags ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def winml_bert_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("winml_bert")
    before = digest(sidecar.sidecar_path(WINML_BERT))
    out = tmp / "bert.dyn.onnx"
    p = cli(WINML_BERT, *AXES, "-o", out)
    assert p.returncode == 0, p.stderr
    assert digest(sidecar.sidecar_path(WINML_BERT)) == before, "the input sidecar was written"
    return p, out, tmp / "bert.dyn_htp_metadata.json"


def test_tags_cover_every_node_with_correct_depth(winml_bert_run):
    _, out, _ = winml_bert_run
    model = onnx.load(out)
    added = [n for n in model.graph.node if n.name.startswith("dynify/")]
    assert added, "the rewrite of bert_tiny_winml adds nodes; the test needs some"
    for n in model.graph.node:
        tag = props(n).get("winml.hierarchy.tag", "")
        assert tag.startswith("/"), f"{n.name} has no hierarchy tag"
        assert props(n).get("winml.hierarchy.depth") == str(len(tag.strip("/").split("/"))), n.name


def test_sidecar_written_beside_output_and_updated(winml_bert_run):
    p, out, side = winml_bert_run
    assert side.is_file() and f"wrote {side}" in p.stdout
    old = json.loads(sidecar.sidecar_path(WINML_BERT).read_text())
    new = json.loads(side.read_text())
    original, model = onnx.load(WINML_BERT), onnx.load(out)

    names = {n.name for n in model.graph.node}
    removed = {n.name for n in original.graph.node} - names
    assert removed, "the rewrite of bert_tiny_winml removes folded constants; the test needs some"
    assert set(new["nodes"]) == names
    assert not removed & set(new["nodes"])
    assert all(new["nodes"][n.name] == props(n)["winml.hierarchy.tag"] for n in model.graph.node)

    stats = new["statistics"]
    assert set(stats) == set(old["statistics"])
    assert stats["onnx_nodes"] == stats["tagged_nodes"] == len(model.graph.node) != old["statistics"]["onnx_nodes"]
    assert stats["empty_tags"] == 0 and stats["coverage_percentage"] == 100.0
    assert stats["module_types"] == old["statistics"]["module_types"]
    tagging = new["report"]["steps"]["node_tagging"]
    assert tagging["total_nodes"] == tagging["tagged_nodes_count"] == len(model.graph.node)
    assert sum(tagging["nodes_per_tag"].values()) == len(model.graph.node)

    for where in (new["tracing"]["inputs"], new["report"]["steps"]["input_generation"]["inputs"]):
        assert {k: v["shape"] for k, v in where.items()} == {n: ["batch", "seq"] for n in TOKENS}
        assert {k: v["dtype"] for k, v in where.items()} == {n: "torch.int32" for n in TOKENS}
    assert new["outputs"]["onnx_model"]["path"] == "bert.dyn"
    assert new["outputs"]["metadata"]["path"] == side.name
    assert new["winml_dynify"]["symbols"]["seq"]["max"] == 64
    assert new["winml_dynify"]["nodes_removed"] == len(removed)

    untouched = {k for k in old if k not in ("nodes", "statistics", "tracing", "outputs", "report")}
    assert untouched and all(new[k] == old[k] for k in untouched)
    stripped = copy.deepcopy(new["tracing"])
    for v in stripped["inputs"].values():
        v["shape"] = [1, 16]
    assert stripped == old["tracing"]


def test_io_metadata_shows_symbolic_dims(winml_bert_run):
    _, out, _ = winml_bert_run
    specs = json.loads(meta(onnx.load(out))["winml.io.inputs"])
    assert {s["name"]: s["shape"] for s in specs} == {n: ["batch", "seq"] for n in TOKENS}
    assert all("value_range" in s for s in specs)


def test_no_temporary_files_left(winml_bert_run):
    _, out, _ = winml_bert_run
    assert sorted(p.name for p in out.parent.iterdir()) == ["bert.dyn.onnx", "bert.dyn_htp_metadata.json"]


def test_no_sidecar_without_one_beside_the_input(tmp_path):
    assert cli(BERT, *AXES, "-o", tmp_path / "m.onnx", "--no-check").returncode == 0
    assert not list(tmp_path.glob("*.json"))


def test_plan_writes_no_sidecar(tmp_path):
    p = cli(WINML_BERT, *AXES, "-o", tmp_path / "m.onnx", "--plan")
    assert p.returncode == 0, p.stderr
    assert not list(tmp_path.iterdir())


def test_sidecar_of_a_real_winml_export(tmp_path):
    """winml/bert: node tags live only in the sidecar; entries for nodes not in the model are dropped, and
    the statistics count the nodes that carry a tag in the file (none)."""
    out = tmp_path / "bert.onnx"
    p = cli(REAL_BERT, "--dynamic-batch", "--dynamic-seq", "-o", out, "--no-check")
    assert p.returncode == 0, p.stderr
    old = json.loads(sidecar.sidecar_path(REAL_BERT).read_text())
    new = json.loads((tmp_path / "bert_htp_metadata.json").read_text())
    model, original = onnx.load(out), onnx.load(REAL_BERT)
    stale = set(old["nodes"]) - {n.name for n in original.graph.node}
    assert stale and not stale & set(new["nodes"])
    assert set(new["nodes"]) <= {n.name for n in model.graph.node}
    added = [n.name for n in model.graph.node if n.name.startswith("dynify/")]
    assert added and all(new["nodes"][a].startswith("/BertModel") for a in added)
    assert new["statistics"]["onnx_nodes"] == len(model.graph.node)
    assert not any(props(n).get("winml.hierarchy.tag") for n in model.graph.node)
    assert new["statistics"]["tagged_nodes"] == 0 and new["statistics"]["coverage_percentage"] == 0.0
    assert new["tracing"]["inputs"]["input_ids"]["shape"] == ["batch", "sequence_length"]
    assert new["export_context"] == old["export_context"] and new["modules"] == old["modules"]
    written = (tmp_path / "bert_htp_metadata.json").read_text().splitlines()
    assert written[1] == json.dumps(new, indent=2).splitlines()[1], "the input's indentation is kept"


def test_sidecar_update_on_a_synthetic_graph():
    """Removed (and stale) nodes leave, added nodes take their metadata tag or their consumer's, unknown keys
    stay."""
    def tagged(node, tag):
        node.metadata_props.add(key="winml.hierarchy.tag", value=tag)
        return node
    original = make_model([helper.make_node("Identity", ["x"], ["a"], name="keep"),
                           helper.make_node("Identity", ["a"], ["y"], name="gone")],
                          [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    dynified = make_model([helper.make_node("Identity", ["x"], ["a"], name="keep"),
                           tagged(helper.make_node("Identity", ["a"], ["b"], name="dynify/tagged_1"), "/M/Sub"),
                           helper.make_node("Identity", ["b"], ["c"], name="dynify/untagged_2"),
                           helper.make_node("Identity", ["c"], ["y"], name="consumer")],
                          [tensor("x", ["batch", 3])], [tensor("y", ["batch", 3])])
    data = {"nodes": {"keep": "/M", "gone": "/M/Gone", "consumer": "/M/Head", "stale": "/M/Old"},
            "custom": {"k": [1, 2]},
            "modules": {"traced_tag": "/M"}, "statistics": {"onnx_nodes": 2, "tagged_nodes": 2, "extra": "x"},
            "io": {"inputs": [{"name": "x", "shape": [2, 3]}], "outputs": [{"name": "y", "shape": [2, 3]}]}}
    new = sidecar.update(data, original, dynified)
    assert new["nodes"] == {"keep": "/M", "consumer": "/M/Head", "dynify/tagged_1": "/M/Sub",
                            "dynify/untagged_2": "/M/Head"}
    assert new["statistics"] == {"onnx_nodes": 4, "tagged_nodes": 1, "extra": "x"}  # one node carries a tag
    assert new["io"] == {"inputs": [{"name": "x", "shape": ["batch", 3]}],
                         "outputs": [{"name": "y", "shape": ["batch", 3]}]}
    assert new["custom"] == {"k": [1, 2]} and data["nodes"]["gone"] == "/M/Gone"


def test_sidecar_that_would_overwrite_the_input_is_refused(tmp_path):
    src = tmp_path / "model.onnx"
    shutil.copy(WINML_BERT, src)
    shutil.copy(sidecar.sidecar_path(WINML_BERT), tmp_path / "model_htp_metadata.json")
    before = digest(tmp_path / "model_htp_metadata.json")
    p = cli(src, *AXES, "-o", tmp_path / "model.onnx2", "--no-check")
    assert p.returncode == 2 and "would overwrite the input's" in p.stderr
    assert not (tmp_path / "model.onnx2").exists()
    assert digest(tmp_path / "model_htp_metadata.json") == before


def test_malformed_sidecar_is_a_usage_error(tmp_path):
    src = tmp_path / "model.onnx"
    shutil.copy(WINML_BERT, src)
    (tmp_path / "model_htp_metadata.json").write_text("{not json")
    p = cli(src, *AXES, "-o", tmp_path / "out.onnx", "--no-check")
    assert p.returncode == 2 and "cannot read the sidecar" in p.stderr
    assert not (tmp_path / "out.onnx").exists()


# --- dynamic_axes output names -----------------------------------------------------------------------------

def _axes_json(tmp_path: Path, outputs: dict) -> Path:
    spec = tmp_path / "axes.json"
    spec.write_text(json.dumps({**{n: {"0": "batch", "1": "seq"} for n in TOKENS}, **outputs}))
    return spec


@pytest.mark.parametrize("outputs", [
    {"last_hidden_state": {"0": "batch", "1": "seq"}, "pooler_output": {"0": "batch"}},
    {"last_hidden_state": [0, 1], "pooler_output": [0]},
])
def test_axes_json_outputs_that_agree(tmp_path, outputs):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert cli(BERT, *AXES, "-o", a, "--no-check").returncode == 0
    p = cli(BERT, "--axes-json", _axes_json(tmp_path, outputs), "-o", b, "--no-check")
    assert p.returncode == 0, p.stderr
    assert onnx.load(a).SerializeToString() == onnx.load(b).SerializeToString()


@pytest.mark.parametrize(("outputs", "needle"), [
    ({"last_hidden_state": {"1": "tokens"}}, "last_hidden_state:1 is derived as 'seq', not 'tokens'"),
    ({"last_hidden_state": {"2": "hidden"}}, "last_hidden_state:2 is static (32)"),
    ({"pooler_output": [1]}, "pooler_output:1 is static (32) in the rewritten graph, not a dynamic dim"),
    ({"pooler_output": {"5": "batch"}}, "axis 5 is out of range"),
    ({"logits": {"0": "batch"}}, "'logits' is neither an input nor an output"),
])
def test_axes_json_outputs_that_disagree_exit_2(tmp_path, outputs, needle):
    out = tmp_path / "o.onnx"
    p = cli(BERT, "--axes-json", _axes_json(tmp_path, outputs), "-o", out)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_axes_json_outputs_checked_when_nothing_is_rewritten(tmp_path):
    out = tmp_path / "m.onnx"
    assert cli(BERT, *AXES, "-o", out, "--no-check").returncode == 0
    assert cli(out, "--axes-json", _axes_json(tmp_path, {"pooler_output": {"0": "batch"}}), "-o",
               tmp_path / "again.onnx", "--no-check").returncode == 0
    p = cli(out, "--axes-json", _axes_json(tmp_path, {"pooler_output": {"0": "N"}}), "-o",
            tmp_path / "x.onnx", "--no-check")
    assert p.returncode == 2 and "derived as 'batch', not 'N'" in p.stderr


# --- presets -------------------------------------------------------------------------------------------------

def _load(rel: str) -> onnx.ModelProto:
    return onnx.load(FIXTURES / rel, load_external_data=False)


@pytest.mark.parametrize(("rel", "batch", "seq"), [
    ("bert_tiny/s0_batch1_seq16.onnx", list(TOKENS), list(TOKENS)),
    ("distilbert/s0_batch1_seq16.onnx", ["input_ids", "attention_mask"], ["input_ids", "attention_mask"]),
    ("winml/gpt2/s0_batch1_seq16.onnx", ["input_ids", "attention_mask", "position_ids"],
     ["input_ids", "attention_mask", "position_ids"]),
])
def test_presets_on_text_fixtures(rel, batch, seq):
    model = _load(rel)
    sel = select_batch(model)
    assert sel.axes == [(n, 0, "batch") for n in batch] and sel.sizes == {"batch": 1}
    sel = select_seq(model)
    assert sel.axes == [(n, 1, "sequence_length") for n in seq] and sel.sizes == {"sequence_length": 16}
    assert "input_ids:1" in sel.describe() and "sequence_length (exported 16)" in sel.describe()
    with pytest.raises(UsageError, match="no 4-D floating-point input"):
        select_image(model)


@pytest.mark.parametrize(("rel", "name"), [("resnet_hw/s0_batch1_height32_width32.onnx", "pixel_values"),
                                           ("mobilenetv2_hw/s0_batch1_height32_width32.onnx", "input"),
                                           ("winml/resnet/s0_batch1_height32_width32.onnx", "pixel_values")])
def test_presets_on_vision_fixtures(rel, name):
    model = _load(rel)
    assert select_batch(model).axes == [(name, 0, "batch")]
    sel = select_image(model)
    assert sel.axes == [(name, 2, "height"), (name, 3, "width")]
    assert sel.sizes == {"height": 32, "width": 32}
    with pytest.raises(UsageError, match="no token-like input"):
        select_seq(model)


@pytest.mark.parametrize(("rel", "size"), [("linear/s0_batch3.onnx", 3), ("gru_batch_first/s0_batch3_seq5.onnx", 3),
                                           ("view_shape0/s0_batch3.onnx", 3)])
def test_presets_on_seed_fixtures(rel, size):
    model = _load(rel)
    assert select_batch(model).axes == [("x", 0, "batch")] and select_batch(model).sizes == {"batch": size}
    with pytest.raises(UsageError, match="no token-like input"):
        select_seq(model)  # x is a float sequence, not tokens
    with pytest.raises(UsageError, match="no 4-D"):
        select_image(model)


def _model(*inputs) -> onnx.ModelProto:
    nodes = [helper.make_node("Identity", [vi.name], [f"{vi.name}_out"]) for vi in inputs]
    outs = [helper.make_tensor_value_info(f"{vi.name}_out", vi.type.tensor_type.elem_type, None) for vi in inputs]
    return make_model(nodes, list(inputs), outs)


def test_batch_ambiguity_lists_the_candidates():
    model = _model(tensor("input_ids", [2, 16], TensorProto.INT64), tensor("pixel_values", [4, 3, 8, 8]))
    with pytest.raises(UsageError, match=r"ambiguous.*input_ids \[2, 16\] axis 0 = 2; pixel_values \[4, 3, 8, 8\]"):
        select_batch(model)


def test_seq_ambiguity_lists_the_candidates():
    model = _model(tensor("input_ids", [1, 16], TensorProto.INT64),
                   tensor("decoder_input_ids", [1, 8], TensorProto.INT64))
    with pytest.raises(UsageError, match=r"ambiguous.*input_ids \[1, 16\].*decoder_input_ids \[1, 8\]"):
        select_seq(model)


def test_seq_picks_token_like_inputs_only():
    model = _model(tensor("input_ids", [1, 16], TensorProto.INT64), tensor("pad_mask", [1, 16], TensorProto.BOOL),
                   tensor("inputs_embeds", [1, 16, 8]), tensor("scores", [1, 16], TensorProto.INT64),
                   tensor("mask_float", [1, 16]))
    assert select_seq(model).axes == [("input_ids", 1, "sequence_length"), ("pad_mask", 1, "sequence_length")]


def test_presets_leave_dims_symbolic_under_another_name():
    model = _model(tensor("input_ids", ["N", 16], TensorProto.INT64), tensor("attention_mask", [1, 16],
                                                                              TensorProto.INT64))
    sel = select_batch(model)
    assert sel.axes == [("attention_mask", 0, "batch")]
    assert "input_ids:0 is already symbolic as 'N'" in sel.describe()


def test_image_preset_refuses_channels_last():
    with pytest.raises(UsageError, match="channels-last"):
        select_image(_model(tensor("image", [1, 224, 224, 3])))


def test_preset_in_the_python_api():
    res = dynify(_load("linear/s0_batch3.onnx"), [], presets=["batch"], verify=False)
    assert res.outputs == {"y": ["batch", 4]} and res.selections[0].axes == [("x", 0, "batch")]
    with pytest.raises(UsageError, match="unknown preset"):
        select(_load("linear/s0_batch3.onnx"), ["tokens"])


def test_presets_match_the_equivalent_axis_flags(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    flags = [f for n in TOKENS for f in ("--axis", f"{n}:0=batch", "--axis", f"{n}:1=sequence_length")]
    assert cli(BERT, *flags, "-o", a, "--no-check").returncode == 0
    p = cli(BERT, "--dynamic-batch", "--dynamic-seq", "-o", b, "--no-check")
    assert p.returncode == 0, p.stderr
    assert "--dynamic-batch: input_ids:0, attention_mask:0, token_type_ids:0 = batch (exported 1)" in p.stdout
    assert "--dynamic-seq: input_ids:1, attention_mask:1, token_type_ids:1 = sequence_length" in p.stdout
    assert onnx.load(a).SerializeToString() == onnx.load(b).SerializeToString()


def test_presets_combine_with_axis_and_are_verified(tmp_path):
    out = tmp_path / "r.onnx"
    p = cli(FIXTURES / "resnet_hw" / "s0_batch1_height32_width32.onnx", "--dynamic-image",
            "--axis", "pixel_values:0=N", "-o", out)
    assert p.returncode == 0, p.stderr
    assert "--dynamic-image: pixel_values:2 = height (exported 32); pixel_values:3 = width" in p.stdout
    dims = [d.dim_param for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "", "height", "width"]
    assert ", 0 failed," in p.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--dynamic-image"], "--dynamic-image found no 4-D floating-point input"),
    (["--dynamic-batch", "--axis", "input_ids:0=N"], "input_ids:0 is requested as both 'N' and 'batch'"),
])
def test_preset_usage_errors(tmp_path, args, needle):
    out = tmp_path / "o.onnx"
    p = cli(BERT, *args, "-o", out)
    assert p.returncode == 2 and needle in p.stderr
    assert not out.exists()


# --- inspect -------------------------------------------------------------------------------------------------

def test_inspect_model_on_a_text_fixture():
    info = inspect_model(WINML_BERT)
    assert [i["shape"] for i in info["inputs"]] == [[1, 16]] * 3
    assert {o["name"]: o["shape"] for o in info["outputs"]} == {"last_hidden_state": [1, 16, 32],
                                                                "pooler_output": [1, 32]}
    cand = {(c["input"], c["axis"]): c["presets"] for c in info["candidates"]}
    assert cand[("input_ids", 0)] == {"batch": "batch"} and cand[("input_ids", 1)] == {"seq": "sequence_length"}
    assert info["presets"]["image"]["status"] == "unavailable"
    seq = info["presets"]["seq"]
    assert seq["status"] == "ok" and seq["ranges"]["sequence_length"]["max"] == 64
    res = dynify(WINML_BERT, [], presets=["seq"], verify=False)
    assert seq["rewrites"] == len(res.rewrites) > 0
    assert seq["targets"] == [rw["target"] for rw in res.rewrites]
    assert info["combined"]["presets"] == ["batch", "seq"] and info["combined"]["status"] == "ok"
    assert info["hierarchy"]["tagged_nodes"] == info["hierarchy"]["nodes"] == 133
    assert info["hierarchy"]["sidecar"].endswith("s0_batch1_seq16_htp_metadata.json")


def test_inspect_model_reports_a_refusal():
    info = inspect_model(FIXTURES / "vit_hw" / "s0_batch1_height32_width32.onnx")
    assert info["presets"]["batch"]["status"] == "ok"
    image = info["presets"]["image"]
    assert image["axes"] == ["pixel_values:2=height", "pixel_values:3=width"]
    assert image["status"] == "refused" and "position_embeddings" in image["message"]
    assert info["combined"]["status"] == "refused"


def test_inspect_model_on_a_seed_fixture():
    info = inspect_model(onnx.load(FIXTURES / "linear" / "s0_batch3.onnx"))
    assert [(c["input"], c["axis"], c["size"], c["presets"]) for c in info["candidates"]] == [
        ("x", 0, 3, {"batch": "batch"}), ("x", 1, 10, {})]
    assert info["presets"]["batch"]["status"] == "ok" and "combined" not in info
    assert info["hierarchy"]["sidecar"] is None


def test_inspect_command_text():
    p = cli("inspect", WINML_RESNET)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "  pixel_values  float32  [1, 3, 32, 32]" in lines
    assert any(ln.split() == ["pixel_values:2", "32", "--dynamic-image", "(height)"] for ln in lines)
    assert any(ln.split() == ["pixel_values:1", "3", "-"] for ln in lines)
    assert "  --dynamic-image: pixel_values:2=height, pixel_values:3=width" in lines
    assert "hierarchy tags: 15/15 nodes tagged; sidecar: " + str(sidecar.sidecar_path(WINML_RESNET)) in lines


def test_inspect_command_refusal_and_json():
    vit = FIXTURES / "vit_hw" / "s0_batch1_height32_width32.onnx"
    p = cli("inspect", vit)
    assert p.returncode == 0, p.stderr
    assert "    cannot become dynamic: constant 'model.embeddings.position_embeddings'" in p.stdout
    p = cli("inspect", vit, "--json")
    assert json.loads(p.stdout)["presets"]["image"]["status"] == "refused"


def test_inspect_command_errors():
    p = cli("inspect", FIXTURES / "nope.onnx")
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr


# --- --target ------------------------------------------------------------------------------------------------

def test_target_qnn_is_refused_with_the_fix_back(tmp_path):
    out = tmp_path / "o.onnx"
    p = cli(BERT, "--dynamic-batch", "--axis", "input_ids:1=seq", "--target", "qnn", "-o", out)
    assert p.returncode == 3
    assert "HTP backend needs static shapes" in p.stderr and "interchange form" in p.stderr
    assert "(seq, batch): winml-dynify fix MODEL SYMBOL=N" in p.stderr
    assert "python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param" in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("target", ["cpu", "cuda", "dml"])
def test_other_targets_proceed(tmp_path, target):
    out = tmp_path / "o.onnx"
    p = cli(FIXTURES / "linear" / "s0_batch3.onnx", "--dynamic-batch", "--target", target, "-o", out)
    assert p.returncode == 0, p.stderr
    assert out.is_file()


def test_unknown_target_is_a_usage_error(tmp_path):
    p = cli(BERT, "--dynamic-batch", "--target", "tpu", "-o", tmp_path / "o.onnx")
    assert p.returncode == 2 and "tpu" in p.stderr
