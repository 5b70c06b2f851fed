"""Which symbol values the checks run at: only inside each symbol's range and multiple."""

from __future__ import annotations

from ..rewrite import SymbolRange


def check_shapes(ranges: dict[str, SymbolRange], roles: dict[str, str],
                 override: dict[str, list[int]] | None = None) -> list[dict[str, int]]:
    """The original shape, each symbol moved alone through its values, then all moved together. A symbol
    the graph requires to equal a polynomial of the others (``total == past + seq``) follows them; shapes
    past a joint bound (``past + seq <= 48``) are left out. When an oracle covers the joint shape (every
    other symbol is a padded or prefix sequence), the batch's last value is checked there only: a batch at
    the other symbols' exported sizes is the costliest check, and one batch value there is enough to show
    the samples stay apart."""
    per: dict[str, list[int]] = {}
    for s, r in ranges.items():
        if r.equals is not None:
            continue
        if override and s in override:
            per[s] = override[s]
            continue
        v, top = r.static, r.max
        if roles.get(s) == "batch":
            cands = [v * 2, v * 3] + ([1] if v > 1 else [])
        elif roles.get(s) in ("seq", "prefix"):
            cands = [max(1, v // 2 - 1), max(1, v - 3), 1, top if top is not None else v + 5]
        else:
            cands = [v * 2, v + v // 2]
        per[s] = [c for c in dict.fromkeys(cands)
                  if c >= r.min and (top is None or c <= top) and c != v and c % r.multiple == 0][:4]
    base = {s: r.static for s, r in ranges.items()}
    joint = len(per) > 1 and all(per.values())
    covered = all(roles.get(s) in ("batch", "seq", "prefix") for s in per)  # an oracle checks the joint shape
    last = {s: vals[-1] for s, vals in per.items()
            if joint and covered and roles.get(s) == "batch" and len(vals) > 1}
    shapes = [dict(base)]
    for s, vals in per.items():
        shapes += [{**base, s: v} for v in vals if last.get(s) != v]
    if joint:
        shapes.append({s: last.get(s, vals[0]) for s, vals in per.items()})
    out = []
    for sh in shapes:
        sh.update({s: r.equals.evaluate(sh) for s, r in ranges.items() if r.equals is not None})
        if sh not in out and all(r.allows(sh) for r in ranges.values()):
            out.append(sh)
    return out
