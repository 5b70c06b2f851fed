"""No rewrite depends on the values chosen at export: the same weights exported at two different static
shapes make the same symbolic graph (the same ops, the same symbolic output dims)."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import FIXTURES, manifest_cases

from winml_dynify import dynify

PAIRS = {  # case -> a reference export at other sizes (a batch of 1 broadcasts: exports at 1 and 2 may differ)
    "bert_tiny": "ref_batch3_seq24.onnx",
    "gpt2_cache": "ref_batch1_past3_seq6_total9.onnx",
    "llama_cache": "ref_batch1_past3_seq6_total9.onnx",
    "qwen2_cache": "ref_batch1_past3_seq6_total9.onnx",
}
CASES = {c["name"]: c for c in manifest_cases() if c["name"] in PAIRS}


def _symbolic(path, axes):
    res = dynify(str(path), axes, verify=False)
    relations = {s: str(r.equals) for s, r in res.ranges.items()}
    return Counter(n.op_type for n in res.model.graph.node), res.outputs, relations


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_two_static_exports_give_the_same_symbolic_graph(name):
    case = CASES[name]
    ops_a, outs_a, rel_a = _symbolic(FIXTURES / case["model"], case["axes"])
    ops_b, outs_b, rel_b = _symbolic(FIXTURES / name / PAIRS[name], case["axes"])
    assert outs_a == outs_b
    assert ops_a == ops_b
    assert rel_a == rel_b
