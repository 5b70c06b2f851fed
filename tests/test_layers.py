"""The engine's layering: no module of the package imports one that (directly or not) imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import winml_dynify

ROOT = Path(winml_dynify.__file__).parent


def _module(path: Path) -> str:
    parts = path.with_suffix("").relative_to(ROOT.parent).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import io`` names the submodule)."""
    files = {_module(f): f for f in ROOT.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if not isinstance(n, ast.ImportFrom):
                continue
            if n.level:
                base = package.split(".")[: len(package.split(".")) - n.level + 1]
                mod = ".".join(base + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            subs = {f"{mod}.{a.name}" for a in n.names} & files.keys()
            deps |= subs or ({mod} & files.keys())
        out[name] = deps - {name}
    return out


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    return next((c for v in sorted(edges) if v not in state and (c := visit(v))), None)


def test_no_import_cycles():
    assert _cycle(_imports()) is None, " -> ".join(_cycle(_imports()) or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_context_is_the_bottom_of_the_engine():
    """Op handlers and rules build on the shared types; the context imports none of them."""
    edges = _imports()
    assert edges["winml_dynify.context"] <= {"winml_dynify.dims", "winml_dynify.io", "winml_dynify.errors"}
    for m in ("winml_dynify.ops", "winml_dynify.subgraphs", "winml_dynify.rules.reshape"):
        assert "winml_dynify.analysis" not in edges[m], m
