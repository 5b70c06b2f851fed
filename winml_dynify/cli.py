"""Command line: the only module that prints. Domain errors map to one line and an exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import onnxruntime as ort
import typer

from . import io
from .api import DynifyResult, dynify
from .errors import EXIT_VERIFY_FAILED, DynifyError, UsageError
from .spec import axes_from_json

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Make a statically exported ONNX model dynamic, verified by parity on onnxruntime.")


def _parse_shapes(text: str) -> dict[str, list[int]]:
    """``batch=1,3,8;seq=5,16`` -> {"batch": [1, 3, 8], "seq": [5, 16]}."""
    out: dict[str, list[int]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, vals = part.partition("=")
        try:
            out[name.strip()] = [int(v) for v in vals.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"malformed --check-shapes part {part!r}: expected SYMBOL=N,N,...") from None
        if not name.strip() or not out[name.strip()] or min(out[name.strip()]) < 1:
            raise UsageError(f"malformed --check-shapes part {part!r}: expected SYMBOL=N,N,... with N >= 1")
    return out


def _print_summary(res: DynifyResult, out: Path | None, quiet: bool, plan: bool = False) -> None:
    if quiet:
        return
    echo = typer.echo
    echo(f"symbolic dims: {', '.join(f'{a.input}:{a.axis}={a.symbol}' for a in res.axes) or 'none'}")
    for s, r in res.ranges.items():
        top = r.max if r.max is not None else "inf"
        echo(f"  {s}: exported {r.static}, valid range [{r.min}, {top}]" + (f" ({r.reason})" if r.reason else ""))
    kinds: dict[str, int] = {}
    for rw in res.rewrites:
        kinds[rw["rule"]] = kinds.get(rw["rule"], 0) + 1
    echo(f"rewrites: {len(res.rewrites)}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})"
                                             if kinds else ""))
    for name, dims in res.outputs.items():
        shown = "unknown" if dims is None else f"[{', '.join('?' if d is None else str(d) for d in dims)}]"
        echo(f"  output {name}: {shown}")
    for rw in res.rewrites if plan else []:
        echo(f"  {rw['rule']:<16}{rw['target']}: {rw['detail']}")
    if plan:
        echo("plan only (--plan): nothing verified, nothing written")
    elif res.report is None:
        echo("verification: skipped (--no-check): the model was NOT checked")
    else:
        echo(f"verification on {res.report.provider}:")
        echo(f"  {'oracle':<11}{'shape':<28}{'opt':<10}{'result':<12}{'max abs':>10}  note")
        for c in res.report.checks:
            shape = ",".join(f"{k}={v}" for k, v in c.shape.items())
            diff = f"{c.max_abs:.2e}" if c.max_abs is not None else "-"
            echo(f"  {c.oracle:<11}{shape:<28}{c.opt_level:<10}{c.status:<12}{diff:>10}  {c.note[:70]}")
    for n in res.notes:
        echo(f"note: {n}")
    if out is not None:
        echo(f"wrote {out}")


@app.command()
def main_command(
    model: Annotated[Path, typer.Argument(help="Static ONNX model (e.g. from winml export).")],
    axis: Annotated[list[str] | None, typer.Option("--axis", "-a", help="NAME:AXIS=SYMBOL; repeatable. "
                                                    "The same SYMBOL on several inputs ties them.")] = None,
    axes_json: Annotated[Path | None, typer.Option("--axes-json", help="torch dynamic_axes JSON, or an export "
                                                   "config holding a dynamic_axes key.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output path "
                                                "(default: <stem>.dynamic.onnx beside MODEL).")] = None,
    check_shapes: Annotated[str | None, typer.Option("--check-shapes", help="Shapes to verify, "
                                                     "e.g. 'batch=1,3,8;seq=5,16'.")] = None,
    reference: Annotated[list[Path] | None, typer.Option("--reference", help="Static export of the same "
                                                         "weights at another shape; repeatable.")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip verification (said in the output).")] = False,
    ep: Annotated[str, typer.Option("--ep", help="onnxruntime execution provider for verification.")] =
        "CPUExecutionProvider",
    report: Annotated[Path | None, typer.Option("--report", help="Write the full report as JSON.")] = None,
    keep_failed: Annotated[bool, typer.Option("--keep-failed", help="Write the output even when "
                                              "verification fails (exit code stays 1).")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Dry run: show what would be rewritten; write nothing.")]
        = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated check inputs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Make the chosen input dims of MODEL symbolic and rewrite every shape constant that depended on them."""
    try:
        requests: list = list(axis or [])
        if axes_json is not None:
            requests += axes_from_json(axes_json)
        if ep not in ort.get_available_providers():
            raise UsageError(f"execution provider {ep!r} is not available; installed: "
                             f"{', '.join(ort.get_available_providers())}")
        shapes = _parse_shapes(check_shapes) if check_shapes else None
        out = output or model.with_name(f"{model.stem}.dynamic.onnx")
        if out.resolve() == model.resolve():
            raise UsageError("the output path is the input model; choose another -o")
        progress = None if quiet or not sys.stderr.isatty() else _progress
        loaded, external = io.read(model)
        res = dynify(loaded, requests, verify=not (no_check or plan), shapes=shapes,
                     references=[str(r) for r in reference or []], provider=ep, seed=seed, progress=progress)
        failed = res.report is not None and not res.report.ok
        written = None
        if not plan and (not failed or keep_failed):
            io.save(res.model, out, external=external)
            written = out
        if report is not None:
            report.write_text(json.dumps(res.as_dict(), indent=1))
        _print_summary(res, written, quiet, plan)
        if failed:
            bad = next(c for c in res.report.checks if c.status == "failed")
            typer.echo(f"error: verification failed at {bad.shape} ({bad.oracle}, opt {bad.opt_level}): "
                       f"{bad.note or 'outputs differ'}; " + ("output written anyway (--keep-failed)" if keep_failed
                                                            else "nothing written"), err=True)
            raise typer.Exit(EXIT_VERIFY_FAILED)
    except DynifyError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\rverifying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def main() -> None:
    app()
