"""Command line: the only module that prints. Domain errors map to one line and an exit code."""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated

import onnxruntime as ort
import typer

from . import __version__, io, paths, presets, sidecar
from .api import DynifyResult, dynify
from .errors import EXIT_VERIFY_FAILED, Interrupted, RefusedError, UsageError, describe
from .fix import fix_dims
from .inspection import inspect_model
from .spec import dynamic_axes_from_json, parse_axis

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Make a statically exported ONNX model dynamic, verified by parity on onnxruntime.")
inspect_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                          help="Show a model's inputs, outputs and candidate dynamic axes.")


class Target(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    dml = "dml"
    qnn = "qnn"


def _qnn_refusal(axis: list[str], wanted: list[str]) -> RefusedError:
    """Why ``--target qnn`` is refused, with the command that fixes the dims back."""
    symbols: list[str] = []
    for text in axis:
        try:
            symbols.append(parse_axis(text)[2])
        except UsageError:
            continue
    symbols += [{"batch": presets.BATCH, "seq": presets.SEQ}.get(w, presets.HEIGHT) for w in wanted]
    symbols += [presets.WIDTH] if "image" in wanted else []
    names = f" ({', '.join(dict.fromkeys(symbols))})" if symbols else ""
    return RefusedError(
        "--target qnn: the QNN execution provider's HTP backend needs static shapes (it rejects nodes with "
        "dynamic shapes, and its Expand builder needs a constant shape), so a dynified model is only an "
        "interchange form there. Deploy the static export on QNN, or fix the dims of a dynified model back to "
        f"the sizes you will run{names}: winml-dynify fix MODEL SYMBOL=N ... (fixes and folds the shape "
        "computations back), or python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param SYMBOL "
        "--dim_value N IN.onnx OUT.onnx once per symbol")


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


def _parse_maxima(items: list[str]) -> dict[str, int]:
    """``["seq=512"]`` -> {"seq": 512}."""
    out: dict[str, int] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise UsageError(f"malformed --max {item!r}: expected SYMBOL=N with N >= 1, e.g. seq=512")
        out[name.strip()] = int(value)
    return out


def _print_summary(res: DynifyResult, out: Path | None, quiet: bool, plan: bool = False) -> None:
    if quiet:
        return
    echo = typer.echo
    echo(f"symbolic dims: {', '.join(f'{a.input}:{a.axis}={a.symbol}' for a in res.axes) or 'none'}")
    for s, r in res.ranges.items():
        top = r.max if r.max is not None else "inf"
        step = f", multiples of {r.multiple}" if r.multiple > 1 else ""
        echo(f"  {s}: exported {r.static}, valid range [{r.min}, {top}]{step}"
             + (f" ({r.reason})" if r.reason else ""))
        if r.equals is not None:
            echo(f"    the graph requires {s} == {r.equals} (checked at run time)")
        for p, limit in r.jointly:
            echo(f"    the graph requires {p} <= {limit} (checked at run time)")
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
        counts = {s: sum(c.status == s for c in res.report.checks) for s in ("passed", "failed", "unverified")}
        echo(f"  {counts['passed']} passed, {counts['failed']} failed, {counts['unverified']} unverified"
             + (" (no oracle covers them, or they lie outside the valid range: see their notes)"
                if counts["unverified"] else ""))
        mem = res.report.memory
        if mem:
            w = mem["weights"]["rewritten"]
            size = (w["inline_bytes"] + w["external_bytes"]) / 2**20
            echo(f"  memory: onnxruntime held one model at a time ({size:.3g} MB of weights"
                 f"{', external data read from its folder' if w['external_bytes'] else ''})"
                 + (f"; peak RSS {mem['peak_rss_mb']:.0f} MB" if mem["peak_rss_mb"] is not None else ""))
    for n in res.notes:
        echo(f"note: {n}")
    if out is not None:
        echo(f"wrote {out}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"winml-dynify {__version__}")
        raise typer.Exit()


VersionOption = Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                             help="Print the version and exit.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]


@contextmanager
def _guarded(debug: bool) -> Iterator[None]:
    """Every failure leaves as one line on stderr and its exit code (:func:`errors.describe`)."""
    try:
        yield
    except (typer.Exit, SystemExit):
        raise
    except BaseException as e:  # every other failure, including interrupts: one line and an exit code
        if debug:
            traceback.print_exc()
        message, code = describe(e)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code) from None


@app.command()
def main_command(
    model: Annotated[Path, typer.Argument(help="Static ONNX model (e.g. from winml export).")],
    axis: Annotated[list[str] | None, typer.Option("--axis", "-a", metavar="NAME:AXIS=SYMBOL",
                                                   help="Repeatable. The same SYMBOL on several inputs ties "
                                                   "them.")] = None,
    axes_json: Annotated[Path | None, typer.Option("--axes-json", metavar="FILE", help="torch dynamic_axes "
                                                   "JSON, or an export config holding a dynamic_axes key.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="OUT", help="Output path "
                                                "(default: <stem>.dynamic.onnx beside MODEL).")] = None,
    check_shapes: Annotated[str | None, typer.Option("--check-shapes", metavar="SHAPES", help="Shapes to verify, "
                                                     "e.g. 'batch=1,3,8;seq=5,16'.")] = None,
    reference: Annotated[list[Path] | None, typer.Option("--reference", metavar="FILE", help="Static export of "
                                                         "the same weights at another shape (repeatable): an "
                                                         "oracle, and what decides splits one export leaves "
                                                         "open ([h/2, 2] or [16, h/16]).")] = None,
    maximum: Annotated[list[str] | None, typer.Option("--max", metavar="SYMBOL=N", help="The largest size SYMBOL "
                                                      "takes (repeatable): its valid range, checked at N, and "
                                                      "the size position-only computations are tabulated at.")
                       ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip verification (said in the output).")] = False,
    ep: Annotated[str, typer.Option("--ep", metavar="PROVIDER", help="onnxruntime execution provider for "
                                    "verification.")] = "CPUExecutionProvider",
    report: Annotated[Path | None, typer.Option("--report", metavar="FILE", help="Write the full report as "
                                                "JSON.")] = None,
    keep_failed: Annotated[bool, typer.Option("--keep-failed", help="Write the output even when "
                                              "verification fails (exit code stays 1).")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Dry run: show what would be rewritten; write nothing.")]
        = False,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the generated check inputs (>= 0).")]
        = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Preset: axis 0 of every input whose "
                                                "first dim is the common batch size, symbol 'batch'.")] = False,
    dynamic_seq: Annotated[bool, typer.Option("--dynamic-seq", help="Preset: axis 1 of the 2-D integer token "
                                              "inputs (input_ids, attention_mask, ...), symbol "
                                              "'sequence_length'.")] = False,
    dynamic_image: Annotated[bool, typer.Option("--dynamic-image", help="Preset: axes 2 and 3 of the 4-D float "
                                                "(NCHW) inputs, symbols 'height' and 'width'.")] = False,
    target: Annotated[Target | None, typer.Option("--target", case_sensitive=False, metavar="cpu|cuda|dml|qnn",
                                                  help="Where the model will run. qnn is refused: its HTP "
                                                  "backend needs static shapes.")] = None,
    debug: DebugOption = False,
    version: VersionOption = False,
) -> None:
    """Make the chosen input dims of MODEL symbolic and rewrite every shape constant that depended on them.

    Also: winml-dynify inspect MODEL (inputs, outputs, candidate axes, what each preset would do), and
    winml-dynify fix MODEL SYMBOL=N ... (fix symbols back to sizes).
    """
    with _guarded(debug):
        wanted = [name for name, on in (("batch", dynamic_batch), ("seq", dynamic_seq), ("image", dynamic_image))
                  if on]
        if target is Target.qnn:
            raise _qnn_refusal(list(axis or []), wanted)
        if seed < 0:
            raise UsageError(f"--seed {seed}: the seed must be >= 0")
        for ref in reference or []:
            if not ref.is_file():
                raise UsageError(f"--reference file not found: {ref}")
        shapes = _parse_shapes(check_shapes) if check_shapes else None
        maxima = _parse_maxima(maximum or [])
        requests: list = list(axis or [])
        loaded, external = io.read(model, weights=False)
        out = output or model.with_name(f"{model.stem}.dynamic.onnx")
        reads = paths.model_reads(model, external)
        reads.update({f"--reference {r}": r for r in reference or []})
        if axes_json is not None:
            reads["--axes-json file"] = axes_json
        side = sidecar.read(model)
        writes = {} if plan else paths.model_writes(out)
        if side is not None and not plan:
            writes["output sidecar"] = sidecar.target(model, out)
        if report is not None:
            writes["--report file"] = report
        paths.check(writes, reads)
        declared = []
        if axes_json is not None:
            from_json, declared = dynamic_axes_from_json(axes_json, loaded)
            requests += from_json
        for sel in presets.select(loaded, wanted):
            if not quiet:
                typer.echo(sel.describe())
            requests += sel.axes
        if ep not in ort.get_available_providers():
            raise UsageError(f"execution provider {ep!r} is not available; installed: "
                             f"{', '.join(ort.get_available_providers())}")
        progress = None if quiet or not sys.stderr.isatty() else _progress
        with io.Staged(out) as staged:  # verified from the staged output: one serialisation
            res = dynify(loaded, requests, verify=not (no_check or plan), shapes=shapes,
                         references=[str(r) for r in reference or []], provider=ep, seed=seed, progress=progress,
                         expect_outputs=declared, inplace=side is None, data_dir=model.parent, source=model,
                         stage=None if plan else partial(staged.write, external=external, data_dir=model.parent),
                         maxima=maxima)
            failed = res.report is not None and not res.report.ok
            written = side_written = None
            if not plan and (not failed or keep_failed):
                if staged.model_path is None:  # not verified: nothing staged yet
                    staged.write(res.model, external=external, data_dir=model.parent)
                staged.commit()
                written = out
                ranges = {s: {"min": r.min, "max": r.max, "static": r.static} for s, r in res.ranges.items()}
                side_written = sidecar.write_beside(model, out, loaded, res.model, ranges, data=side)
        if report is not None:
            paths.write_text(report, json.dumps({**res.as_dict(),
                                                 "sidecar": str(side_written) if side_written else None}, indent=1))
        _print_summary(res, written, quiet, plan)
        if side_written is not None and not quiet:
            typer.echo(f"wrote {side_written}")
        if failed:
            bad = next(c for c in res.report.checks if c.status == "failed")
            typer.echo(f"error: verification failed at {bad.shape} ({bad.oracle}, opt {bad.opt_level}): "
                       f"{bad.note or 'outputs differ'}; " + ("output written anyway (--keep-failed)" if keep_failed
                                                            else "nothing written"), err=True)
            raise typer.Exit(EXIT_VERIFY_FAILED)


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\rverifying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


@inspect_app.command()
def inspect_command(
    model: Annotated[Path, typer.Argument(help="ONNX model to inspect.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    debug: DebugOption = False,
    version: VersionOption = False,
) -> None:
    """Show the inputs, outputs and candidate dynamic axes of MODEL, and whether each preset's axes can be
    made dynamic (the rewrite is tried, not verified; nothing is written)."""
    with _guarded(debug):
        info = inspect_model(model)
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    for line in format_inspection(info):
        typer.echo(line)


def _shape(dims: list) -> str:
    return f"[{', '.join('?' if d is None else str(d) for d in dims)}]"


def format_inspection(info: dict, max_targets: int = 4) -> list[str]:
    """The text ``winml-dynify inspect`` prints for an :func:`inspect_model` result."""
    lines = []
    for kind in ("inputs", "outputs"):
        lines.append(f"{kind}:")
        width = max((len(t["name"]) for t in info[kind]), default=0)
        for t in info[kind]:
            lines.append(f"  {t['name']:<{width}}  {t['dtype'] or '?':<8} {_shape(t['shape'])}")
    lines.append("candidate axes:")
    width = max((len(f"{c['input']}:{c['axis']}") for c in info["candidates"]), default=0)
    for c in info["candidates"]:
        picks = ", ".join(f"--dynamic-{p} ({sym})" for p, sym in c["presets"].items()) or "-"
        lines.append(f"  {c['input'] + ':' + str(c['axis']):<{width}}  {c['size']!s:>6}  {picks}")
    lines.append("presets:")
    rows = [(f"--dynamic-{name}", p) for name, p in info["presets"].items()]
    if "combined" in info:
        rows.append((" ".join(f"--dynamic-{n}" for n in info["combined"]["presets"]), info["combined"]))
    for label, p in rows:
        if p["status"] == "unavailable":
            lines.append(f"  {label}: {p['message'].removeprefix(label + ' ').removeprefix(label + ': ')}")
            continue
        lines.append(f"  {label}: {', '.join(p['axes'])}")
        if p["status"] != "ok":
            lines.append(f"    cannot become dynamic: {p['message']}")
            continue
        rules = ", ".join(f"{k}: {v}" for k, v in p["rules"].items())
        lines.append(f"    can become dynamic: {p['rewrites']} rewrites" + (f" ({rules})" if rules else ""))
        for sym, r in p["ranges"].items():
            top = r["max"] if r["max"] is not None else "inf"
            lines.append(f"    {sym}: exported {r['static']}, valid range [{r['min']}, {top}]"
                         + (f" ({r['reason']})" if r["reason"] else ""))
        if p["targets"]:
            more = len(p["targets"]) - max_targets
            lines.append(f"    rewritten: {', '.join(p['targets'][:max_targets])}"
                         + (f" (+{more} more)" if more > 0 else ""))
    h = info["hierarchy"]
    lines.append(f"hierarchy tags: {h['tagged_nodes']}/{h['nodes']} nodes tagged; sidecar: {h['sidecar'] or 'none'}")
    return lines


fix_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def parse_sizes(values: list[str]) -> dict[str, int]:
    """``["batch=1", "seq=128"]`` -> {"batch": 1, "seq": 128}."""
    sizes = {}
    for v in values:
        name, _, size = v.partition("=")
        if not name or not size.isdigit():
            raise UsageError(f"malformed {v!r}: expected SYMBOL=SIZE, e.g. seq=128")
        sizes[name] = int(size)
    return sizes


@fix_app.command()
def fix_command(
    model: Annotated[Path, typer.Argument(help="A dynified ONNX model.")],
    values: Annotated[list[str], typer.Argument(help="SYMBOL=SIZE for each symbol to fix, e.g. batch=1 seq=128.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="OUT", help="Output path "
                                                "(default: <stem>.fixed.onnx beside MODEL).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow sizes outside the range stored in the model's "
                                        "winml.dynify.symbol_ranges.")] = False,
    debug: DebugOption = False,
    version: VersionOption = False,
) -> None:
    """Fix symbols of MODEL back to sizes and fold the shape computations: the static graph the QNN/HTP
    path expects."""
    with _guarded(debug):
        sizes = parse_sizes(values)
        loaded, external = io.read(model)
        out = output or model.with_name(f"{model.stem}.fixed.onnx")
        paths.check(paths.model_writes(out), paths.model_reads(model, external))
        io.save(fix_dims(loaded, sizes, force=force), out, external=external)
        typer.echo(f"fixed {', '.join(f'{k}={v}' for k, v in sizes.items())}; wrote {out}")


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted()


def main() -> None:
    """Entry point: ``winml-dynify [inspect|fix] ...``. SIGTERM raises, so temporary files are removed."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if len(sys.argv) > 1 and sys.argv[1] == "inspect":
        inspect_app(args=sys.argv[2:], prog_name="winml-dynify inspect")
    elif len(sys.argv) > 1 and sys.argv[1] == "fix":
        fix_app(args=sys.argv[2:], prog_name="winml-dynify fix")
    else:
        app(prog_name="winml-dynify")
