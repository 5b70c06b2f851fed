"""A/B one rule: each fixture dynified with the rule and without it, both timed against the fixture's
static export at each of its shapes, the three sessions taking turns run by run (one thread, medians).

    .venv/bin/python bench/ab.py identities bert_tiny,gpt2 --runs 400
    .venv/bin/python bench/ab.py row-pick clip_text --runs 600

A rule is switched off by replacing the function that applies it (below) with one that finds nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))

from make_inputs import input_seed, make_inputs  # noqa: E402

import winml_dynify.rules.flat_gathers as flat_gathers  # noqa: E402
import winml_dynify.rules.identities as identities  # noqa: E402
import winml_dynify.rules.tables as tables  # noqa: E402
from bench import _session, interleaved, optimised_ops  # noqa: E402
from winml_dynify import dynify  # noqa: E402

# rule -> (module, function, what it returns when it finds nothing)
RULES = {
    "identities": (identities, "drop", 0),
    "unit-axes-reader": (flat_gathers, "_unit_axes_reader", None),
    "row-pick": (flat_gathers, "_row_pick", None),
    "flat-gathers": (flat_gathers, "simplify", 0),
    "tables": (tables, "tabulate", 0),
}


def build(case: dict, rule: str, on: bool, maxima: dict[str, int] | None) -> bytes:
    module, name, nothing = RULES[rule]
    real = getattr(module, name)
    if not on:
        setattr(module, name, lambda *a, **k: nothing)
    try:
        return dynify(ROOT / "fixtures" / case["model"], case["axes"], verify=False, maxima=maxima
                      ).model.SerializeToString()
    finally:
        setattr(module, name, real)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rule", choices=sorted(RULES))
    ap.add_argument("cases", help="fixture names (comma-separated)")
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--max", default="", help="SYMBOL=N, as the CLI's --max")
    args = ap.parse_args()
    maxima = {k: int(v) for k, v in (a.split("=") for a in args.max.split(",") if a)} or None
    cases = {c["name"]: c for c in json.loads((ROOT / "fixtures" / "manifest.json").read_text())["cases"]}
    for name in args.cases.split(","):
        case = cases[name]
        models = {"without": build(case, args.rule, False, maxima), "with": build(case, args.rule, True, maxima)}
        counts = {k: sum(optimised_ops(v).values()) for k, v in models.items()}
        print(f"{name}: nodes after ORT_ENABLE_ALL without {counts['without']}, with {counts['with']}")
        sessions = {k: _session(v) for k, v in models.items()}
        for entry in [case["s0"], *case["references"]]:
            feeds = make_inputs(case["inputs"], entry["dims"], input_seed(name, entry["dims"]))
            med = interleaved({"static": _session(str(ROOT / "fixtures" / entry["file"])), **sessions}, feeds,
                              args.runs, 20)
            shape = ",".join(f"{k}={v}" for k, v in entry["dims"].items())
            print(f"  {shape}: dyn/static without {med['without'] / med['static']:.3f}x, "
                  f"with {med['with'] / med['static']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
