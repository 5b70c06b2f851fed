"""Reshape targets a model computes at run time, written as constants with copy (0) and infer (-1) entries.

Traced code builds targets from its own shape reads (``x.view(B * nW, N, C)`` after
``B, H, W, C = x.shape``); the static export folds them, but in the rewritten graph they run on every
call. The analysis knows every entry of such a target at every sample point: a constant entry stays that
number, one that equals the Reshape input's dim at the same index is ``0`` (copy), and at most one other
entry is ``-1`` (inferred from the element count). On every input where the original
Reshape succeeds the constant target gives the same output shape, so the shape computation behind it is
pruned.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..context import TInfo, constant_names


def _literals(node: onnx.NodeProto | None, consts: set[str], infos: dict[str, TInfo], n: int) -> list[bool]:
    """Per entry of the target ``node`` makes: True when it is a constant of the graph (a ``Concat`` input
    that is an initializer or a Constant), False when it is computed, even if its value is static."""
    if node is None or node.op_type != "Concat":
        return [False] * n
    out: list[bool] = []
    for i in node.input:
        info = infos.get(i)
        if info is None or info.shape is None or len(info.shape) > 1 or not all(d.static for d in info.shape):
            return [False] * n
        out += [i in consts] * (info.shape[0].s0 if info.shape else 1)
    return out if len(out) == n else [False] * n


def _entries(target: TInfo, data: TInfo, literal: list[bool]) -> list[int] | None:
    """The constant target, or None when it would need more than one ``-1``: a computed entry must be the
    input's dim at its index (``0``) or the one inferred entry, even when its value is static (a size read
    from a static axis stays a read, so a later rewrite of that axis still sees where it comes from)."""
    out: list[int] = []
    inferred = 0
    for k, v in enumerate(target.value or []):
        v = tuple(v)
        if literal[k] and len(set(v)) == 1 and v[0] >= -1:  # a number in the graph (0 and -1 keep their meaning)
            out.append(v[0])
            inferred += v[0] == -1
        elif min(v) <= 0:  # a size that reaches 0 (or an invalid one): -1 or 0 could not stand for it
            return None
        elif data.shape is not None and k < len(data.shape) and data.shape[k].vals == v:
            out.append(0)
        else:
            out.append(-1)
            inferred += 1
    return out if inferred <= 1 else None


def add_target(graph: onnx.GraphProto, entries: list[int], base: str, taken: set[str]) -> str:
    """A new int64 initializer of ``graph`` holding ``entries``, named ``base`` (suffixed until the name is
    not in ``taken``, which then holds it)."""
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(entries, np.int64), name))
    return name


def constant_targets(graph: onnx.GraphProto, infos: dict[str, TInfo]) -> int:
    """Give each top-level Reshape (``allowzero`` unset) whose target is computed a constant target when
    :func:`_entries` finds one. Returns how many Reshapes changed."""
    consts = constant_names(graph)
    producer = {o: m for m in graph.node for o in m.output}
    made: dict[tuple[int, ...], str] = {}
    changed = 0
    for n in graph.node:
        if (n.op_type != "Reshape" or n.domain not in ("", "ai.onnx") or len(n.input) < 2 or n.input[1] in consts
                or any(a.name == "allowzero" and a.i for a in n.attribute)):
            continue
        target, data = infos.get(n.input[1]), infos.get(n.input[0])
        if target is None or target.value is None or target.shape is None or len(target.shape) != 1 or data is None:
            continue
        entries = _entries(target, data, _literals(producer.get(n.input[1]), consts, infos, len(target.value)))
        if entries is None:
            continue
        key = tuple(entries)
        if key not in made:
            made[key] = add_target(graph, entries, f"{n.input[1]}/constant", consts)
        n.input[1] = made[key]
        changed += 1
    return changed
