"""Parity checks on onnxruntime: the rewritten model against ground truth that it did not produce.

Oracles (each check names the one it used):

* ``original``   at the exported shape, the rewritten model equals the original static model;
* ``per-sample`` a batch of N different samples equals the original run on each group of its batch;
* ``padding``    a shorter sequence equals the original fed the same tokens right-padded with mask 0,
                 compared on the real positions (models with an attention-mask input);
* ``prefix``     a shorter sequence equals the first positions of the original fed that prefix plus
                 filler tokens (token models without a mask that prove causal on the original);
* ``reference``  a static export of the same weights at another shape (``--reference``);
* ``runs``       a shape no oracle covers: it runs, output shapes equal the declared symbolic dims and
                 no NaN/Inf appears where the original had none. Reported as ``unverified``.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from .dims import parse
from .rewrite import SymbolRange
from .spec import AxisSpec

RTOL, ATOL = 1e-3, 1e-4
OPT_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


@dataclass
class Check:
    oracle: str
    shape: dict[str, int]
    opt_level: str
    status: str  # passed | failed | unverified
    max_abs: float | None = None
    max_rel: float | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    provider: str = "CPUExecutionProvider"

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    def as_dict(self) -> dict:
        return {"provider": self.provider, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


@dataclass
class _Input:
    name: str
    dtype: np.dtype
    static: list[int]
    symbols: dict[int, str]  # axis -> symbol
    low: int = 0
    high: int = 2
    is_mask: bool = False
    is_float: bool = False


def _inputs(model: onnx.ModelProto, specs: list[AxisSpec]) -> list[_Input]:
    inits = {t.name for t in model.graph.initializer}
    ranges = _value_ranges(model)
    vocab = _vocab_sizes(model)
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        static = [d.dim_value for d in tt.shape.dim]
        syms = {s.axis: s.symbol for s in specs if s.input == vi.name}
        inp = _Input(vi.name, dt, static, syms, is_float=dt.kind == "f")
        inp.is_mask = "mask" in vi.name.lower() and dt.kind in "iub"
        if vi.name in ranges:  # winml export writes [low, high)
            inp.low, inp.high = int(ranges[vi.name][0]), int(ranges[vi.name][1])
        if vi.name in vocab:
            inp.high = min(vocab[vi.name], inp.high) if vi.name in ranges else vocab[vi.name]
        if not static and dt.kind in "iu" and vi.name not in ranges:
            inp.low = max(inp.low, 1)  # a scalar integer is a step, length or count: 0 can crash a kernel (SIGFPE)
        out.append(inp)
    return out


def _value_ranges(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    props = {p.key: p.value for p in model.metadata_props}
    try:
        specs = json.loads(props.get("winml.io.inputs", "[]"))
        return {s["name"]: tuple(s["value_range"]) for s in specs if "value_range" in s}
    except (ValueError, TypeError, KeyError):
        return {}


def _vocab_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Integer inputs used (through Cast/Reshape) as indices of a Gather on a table: the table's rows."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type != "Gather" or n.input[0] not in inits:
            continue
        src = n.input[1]
        while src in producer and producer[src].op_type in ("Cast", "Reshape", "Unsqueeze", "Flatten"):
            src = producer[src].input[0]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
        rows = inits[n.input[0]][axis]
        out[src] = min(out.get(src, rows), rows)
    return out


def make_feeds(inputs: list[_Input], values: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for inp in inputs:
        shape = [values.get(inp.symbols.get(k, ""), d) for k, d in enumerate(inp.static)]
        if inp.is_mask:
            a = np.ones(shape, inp.dtype)
            if len(shape) == 2:
                for r in range(1, shape[0]):
                    a[r, int(rng.integers(1, shape[1] + 1)):] = 0
        elif inp.is_float:
            a = rng.standard_normal(shape).astype(inp.dtype)
        elif inp.dtype == np.bool_:
            a = rng.integers(0, 2, shape).astype(bool)
        else:
            a = rng.integers(inp.low, max(inp.high, inp.low + 1), shape).astype(inp.dtype)
        feeds[inp.name] = a
    return feeds


def _roles(inputs: list[_Input]) -> dict[str, str]:
    """batch: only ever axis 0; seq: a sequence axis shared with a mask input; tokens: a token axis
    without a mask (the prefix oracle applies if the model proves causal); other: anything else."""
    axes: dict[str, set[int]] = {}
    for inp in inputs:
        for k, s in inp.symbols.items():
            axes.setdefault(s, set()).add(k)
    masked = {s for inp in inputs if inp.is_mask for s in inp.symbols.values()}
    roles = {}
    for s, ks in axes.items():
        token_like = all(len(i.static) == 2 and not i.is_float for i in inputs if s in i.symbols.values())
        if ks == {0}:
            roles[s] = "batch"  # confirmed (or not) on the original by _settle_batch_roles
        elif len(ks) == 1 and s not in masked and not token_like:
            roles[s] = "samples?"  # a batch on another axis (seq-first layouts), if the original agrees
        elif 0 not in ks and s in masked:
            roles[s] = "seq"
        elif 0 not in ks and all(len(i.static) == 2 and not i.is_float for i in inputs if s in i.symbols.values()):
            roles[s] = "tokens"
        else:
            roles[s] = "other"
    return roles


def _along(axis: int, rank: int, sl: slice) -> tuple:
    """An index that applies ``sl`` on ``axis`` only."""
    index = [slice(None)] * rank
    index[axis] = sl
    return tuple(index)


def check_shapes(ranges: dict[str, SymbolRange], roles: dict[str, str],
                 override: dict[str, list[int]] | None = None) -> list[dict[str, int]]:
    """The original shape, each symbol moved alone through its values, then all moved together. A symbol
    the graph requires to equal a polynomial of the others (``total == past + seq``) follows them."""
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
    shapes = [dict(base)]
    for s, vals in per.items():
        shapes += [{**base, s: v} for v in vals]
    if len(per) > 1 and all(per.values()):
        shapes.append({s: vals[0] for s, vals in per.items()})
    out = []
    for sh in shapes:
        sh.update({s: r.equals.evaluate(sh) for s, r in ranges.items() if r.equals is not None})
        if sh not in out:
            out.append(sh)
    return out


def _session(model_bytes: bytes, level: str, provider: str, data_dir: str | None = None) -> ort.InferenceSession:
    """``data_dir``: the folder external data locations are relative to (the model's, for a model read
    without its weights)."""
    so = ort.SessionOptions()
    if data_dir is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", data_dir)
    so.graph_optimization_level = OPT_LEVELS[level]
    so.log_severity_level = 4
    return ort.InferenceSession(model_bytes, so, providers=[provider])


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[bool, float, float]:
    if a.shape != b.shape:
        return False, float("inf"), float("inf")
    if a.size == 0:
        return True, 0.0, 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    d = np.where(both_nan, 0.0, np.abs(a64 - b64))
    rel = d / np.maximum(np.abs(b64), 1e-12)
    ok = bool(np.allclose(a64, b64, rtol=RTOL, atol=ATOL, equal_nan=True)) if a.dtype.kind in "fc" \
        else bool(np.array_equal(a, b))
    return ok, float(np.nanmax(d)), float(np.nanmax(np.where(d == 0, 0.0, rel)))


class Verifier:
    """Runs the oracles for one (original, rewritten) pair."""

    def __init__(self, original: onnx.ModelProto, rewritten: onnx.ModelProto, specs: list[AxisSpec],
                 outputs: dict[str, list[int | str | None]], provider: str = "CPUExecutionProvider", seed: int = 0,
                 ranges: dict[str, SymbolRange] | None = None, data_dir: str | None = None):
        self.data_dir = data_dir
        self.orig_bytes = original.SerializeToString()
        self.new_bytes = rewritten.SerializeToString()
        self.inputs = _inputs(original, specs)
        self.roles = _roles(self.inputs)
        self.outputs = outputs
        self.out_names = [o.name for o in rewritten.graph.output]
        self.provider = provider
        self.seed = seed
        self.ranges = ranges or {}
        self._sessions: dict[tuple[str, str], ort.InferenceSession] = {}
        self.statics = ({s: r.static for s, r in self.ranges.items()} if self.ranges else
                        {s.symbol: next(i.static[s.axis] for i in self.inputs if i.name == s.input) for s in specs})
        self.role_notes: dict[str, str] = {}
        for s, r in self.ranges.items():  # it moves with the symbols of its polynomial, never alone
            if r.equals is not None and s in self.roles:
                self.roles[s] = "derived"
        self._settle_batch_roles()
        self._settle_token_roles()

    def _settle_batch_roles(self) -> None:
        """A symbol exported at a size > 1 is a batch only if the original proves its samples independent:
        changing sample 0 leaves the outputs of the other samples unchanged. At size 1 nothing can be
        probed; axis 0 is then taken as the batch, by the usual layout."""
        for s, role in sorted(self.roles.items(), key=lambda kv: kv[1] != "batch"):
            if role not in ("batch", "samples?"):
                continue
            if "batch" in (r for s2, r in self.roles.items() if s2 != s) and role == "samples?":
                self.roles[s] = "other"  # one batch oracle at a time: the axis-0 symbol has it
                continue
            if self.statics[s] == 1:
                self.roles[s] = "batch" if role == "batch" else "other"
                continue
            independent = self._unchanged(s, changed=slice(0, 1), kept=slice(1, None))
            if independent:
                self.roles[s] = "batch"
            else:
                self.roles[s] = "other"
                self.role_notes[s] = "its samples are not independent in the original"

    def _settle_token_roles(self) -> None:
        """Prove on the original model that the sequence oracles apply. With a mask (padding oracle):
        changing the masked-out second half of the sequence leaves the outputs at the first half unchanged.
        Without a mask (prefix oracle): the same holds with no masking at all, i.e. the model is causal.
        A symbol that fails its probe gets no oracle (its checks are reported unverified, with the reason)."""
        for s, role in list(self.roles.items()):
            if role not in ("tokens", "seq"):
                continue
            half = self.statics[s] // 2
            same = self._unchanged(s, changed=slice(half, None), kept=slice(0, half), masked=role == "seq")
            if role == "tokens":
                self.roles[s] = "prefix" if same else "other"
            elif not same:
                self.roles[s] = "other"
                self.role_notes[s] = "the original's outputs on real positions change with the padded content"

    def _unchanged(self, s: str, changed: slice, kept: slice, masked: bool = False) -> bool:
        """Probe on the original at the exported shape: change the inputs at ``changed`` positions of
        symbol ``s`` (mask inputs zeroed there first when ``masked``); True when every output carrying
        ``s`` is unchanged at ``kept`` positions (and at least one output carries it)."""
        a = make_feeds(self.inputs, dict(self.statics), np.random.default_rng(self.seed))
        b = {k: v.copy() for k, v in a.items()}
        for inp in self.inputs:
            for ax, sym in inp.symbols.items():
                if sym != s:
                    continue
                at = _along(ax, len(inp.static), changed)
                if inp.is_mask:
                    if masked:
                        a[inp.name][at] = b[inp.name][at] = 0
                elif inp.is_float:
                    b[inp.name][at] += 1
                else:
                    b[inp.name][at] = (b[inp.name][at] - inp.low + 1) % max(inp.high - inp.low, 2) + inp.low
        sess = self.session("original", "disabled")
        same, compared = True, False
        for name, x, y in zip(self.out_names, sess.run(self.out_names, a), sess.run(self.out_names, b), strict=True):
            dims = self.outputs.get(name) or []
            if s in dims:
                at = _along(dims.index(s), x.ndim, kept)
                compared = True
                same &= bool(np.allclose(x[at], y[at], rtol=1e-5, atol=1e-6))
        return same and compared

    def session(self, which: str, level: str) -> ort.InferenceSession:
        key = (which, level)
        if key not in self._sessions:
            self._sessions[key] = _session(self.orig_bytes if which == "original" else self.new_bytes, level,
                                           self.provider, self.data_dir)
        return self._sessions[key]

    def run(self, shapes: list[dict[str, int]], levels: list[str], references: list[str],
            progress=None) -> VerifyReport:
        report = VerifyReport(provider=self.provider)
        todo = list(itertools.product(shapes, levels))
        for k, (shape, level) in enumerate(todo):
            report.checks.append(self._check(shape, level))
            if progress:
                progress(k + 1, len(todo) + len(references) * len(levels))
        for k, ref in enumerate(references):
            for level in levels:
                report.checks.append(self._reference(ref, level))
                if progress:
                    progress(len(todo) + k + 1, len(todo) + len(references) * len(levels))
        return report

    def _expected_shape(self, name: str, values: dict[str, int]) -> list[int] | None:
        dims = self.outputs.get(name)
        if dims is None:
            return None
        out = []
        for d in dims:
            if d is None:
                return None
            if isinstance(d, int):
                out.append(d)
            else:
                out.append(parse(d).evaluate(values))
        return out

    def _check(self, values: dict[str, int], level: str) -> Check:
        t0 = time.perf_counter()
        rng = np.random.default_rng([self.seed, *values.values()])
        feeds = make_feeds(self.inputs, values, rng)
        try:
            got = self.session("rewritten", level).run(self.out_names, feeds)
        except Exception as e:  # onnxruntime raises many types; any failure is a failed check
            return Check("runs", values, level, "failed", seconds=time.perf_counter() - t0,
                         note=f"onnxruntime raised: {str(e).splitlines()[0][:200]}")
        for name, arr in zip(self.out_names, got, strict=True):
            exp = self._expected_shape(name, values)
            if exp is not None and list(arr.shape) != exp:
                return Check("runs", values, level, "failed", seconds=time.perf_counter() - t0,
                             note=f"output {name} has shape {list(arr.shape)}, declared {exp}")
        oracle, truth, note = self._ground_truth(values, feeds, level)
        if truth is None:
            bad = [n for n, a in zip(self.out_names, got, strict=True)
                   if a.dtype.kind == "f" and not np.isfinite(a).all()]
            status = "failed" if bad else "unverified"
            return Check("runs", values, level, status, seconds=time.perf_counter() - t0,
                         note=f"non-finite values in {bad}" if bad else note)
        keep = self._real_positions(feeds) if oracle == "padding" else {}
        return self._compare(oracle, values, level, got, truth, t0, keep)

    def _real_positions(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per output, where the mask marks real tokens: padding oracles compare only those (a padded
        query position's output depends on how many padded keys follow it)."""
        mask = next((i for i in self.inputs if i.is_mask and len(i.static) == 2
                     and self.roles.get(i.symbols.get(1, "")) == "seq"), None)
        if mask is None or feeds[mask.name].all():
            return {}
        valid = feeds[mask.name] != 0
        b_sym, s_sym = mask.symbols.get(0), mask.symbols[1]
        keep = {}
        for name in self.out_names:
            dims = self.outputs.get(name) or []
            if s_sym not in dims or b_sym not in dims:
                continue
            shape = [1] * len(dims)
            bax, sax = dims.index(b_sym), dims.index(s_sym)
            shape[bax], shape[sax] = valid.shape
            keep[name] = (valid if bax < sax else valid.T).reshape(shape)
        return keep

    def _compare(self, oracle, values, level, got, truth, t0, keep=None) -> Check:
        if not truth:
            return Check("runs", values, level, "unverified", seconds=time.perf_counter() - t0,
                         note=f"no output can be compared by the {oracle} oracle")
        worst_abs = worst_rel = 0.0
        ok, notes = True, []
        for name, arr in zip(self.out_names, got, strict=True):
            exp = truth.get(name)
            if exp is None:
                notes.append(f"{name} not compared")
                continue
            if keep and name in keep and arr.shape == exp.shape:
                arr, exp = np.where(keep[name], arr, 0), np.where(keep[name], exp, 0)
            good, da, dr = _diff(arr, exp)
            worst_abs, worst_rel = max(worst_abs, da), max(worst_rel, dr)
            if not good:
                ok = False
                notes.append(f"{name}: max abs diff {da:.3g}")
        return Check(oracle, values, level, "passed" if ok else "failed", worst_abs, worst_rel,
                     time.perf_counter() - t0, "; ".join(notes))

    def _ground_truth(self, values: dict[str, int], feeds: dict[str, np.ndarray], level: str):
        """Outputs the original model gives for these feeds, by batching groups and padding sequences."""
        batch = [s for s, r in self.roles.items() if r == "batch"]
        seq = [s for s, r in self.roles.items() if r in ("seq", "prefix")]
        other = [s for s, r in self.roles.items() if r == "other" and values[s] != self.statics[s]]
        if not other:  # a derived axis (a mask's ``total``) shortens with the sequence it follows: pad it
            seq += [s for s, r in self.roles.items() if r == "derived" and values[s] < self.statics[s]]
        if other:
            why = "; ".join(self.role_notes[s] for s in other if s in self.role_notes)
            return None, None, f"no oracle for {', '.join(other)} other than --reference" + (f" ({why})" if why else "")
        longer = [s for s in seq if values[s] > self.statics[s]]
        if longer:
            return None, None, f"{', '.join(longer)} above the exported size: only --reference can check it"
        moved_b = [s for s in batch if values[s] != self.statics[s]]
        moved_s = [s for s in seq if values[s] != self.statics[s]]
        oracle = ("prefix" if any(self.roles[s] == "prefix" for s in moved_s) else "padding") if moved_s \
            else "per-sample" if moved_b else "original"
        if oracle == "original":
            out = self.session("original", level).run(self.out_names, feeds)
            return oracle, dict(zip(self.out_names, out, strict=True)), ""
        n_b = values[batch[0]] if batch else 1
        k_b = self.statics[batch[0]] if batch else 1
        groups = []
        for g in range(0, n_b, k_b):
            idx = [(g + j) if g + j < n_b else g for j in range(k_b)]
            static_feeds = {}
            for inp in self.inputs:
                a = feeds[inp.name]
                for ax, s in inp.symbols.items():
                    if s in batch:
                        a = np.take(a, idx, axis=ax)
                    elif s in seq and values[s] < self.statics[s]:
                        pad = [(0, 0)] * a.ndim
                        pad[ax] = (0, self.statics[s] - values[s])
                        a = np.pad(a, pad)
                static_feeds[inp.name] = a
            out = self.session("original", level).run(self.out_names, static_feeds)
            groups.append((out, min(k_b, n_b - g)))
        truth: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.out_names):
            dims = self.outputs.get(name)
            # samples mixed on one axis, or an axis the oracle cannot cut; an axis of unnamed size is fine
            # when only the batch moves (its size is then compared as it is, and must equal the original's)
            if (dims is None or sum(d in batch for d in dims) > 1 or (None in dims and oracle != "per-sample")
                    or any(isinstance(d, str) and "*" in d for d in dims)):
                continue
            parts = []
            for out, take in groups:
                a = out[j]
                for ax, d in enumerate(dims):
                    if isinstance(d, str) and (d in seq or parse(d).symbols & set(seq)):
                        a = np.take(a, range(parse(d).evaluate(values)), axis=ax)
                bax = next((ax for ax, d in enumerate(dims) if d in batch), None)
                if bax is None and len(groups) > 1:
                    break
                parts.append(np.take(a, range(take), axis=bax) if bax is not None else a)
            else:
                bax = next((ax for ax, d in enumerate(dims) if d in batch), 0)
                truth[name] = np.concatenate(parts, axis=bax) if len(parts) > 1 else parts[0]
        return oracle, truth, ""

    def _reference(self, path: str, level: str) -> Check:
        t0 = time.perf_counter()
        ref = onnx.load(path, load_external_data=True)
        ins = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in ref.graph.input}
        values = {}
        for inp in self.inputs:
            for ax, s in inp.symbols.items():
                if inp.name in ins:
                    values[s] = ins[inp.name][ax]
        outside = [f"{s}={v} (valid {r.min}..{r.max if r.max is not None else 'inf'})"
                   for s, v in values.items() if (r := self.ranges.get(s)) is not None
                   and (v < r.min or (r.max is not None and v > r.max) or v % r.multiple)]
        if outside:
            return Check("reference", values, level, "unverified", seconds=time.perf_counter() - t0,
                         note=f"outside the valid range: {', '.join(outside)}")
        rng = np.random.default_rng([self.seed, 7, *values.values()])
        feeds = make_feeds(self.inputs, values, rng)
        try:
            got = self.session("rewritten", level).run(self.out_names, feeds)
            truth = _session(ref.SerializeToString(), level, self.provider).run(self.out_names, feeds)
        except Exception as e:  # any onnxruntime failure fails the check
            return Check("reference", values, level, "failed", seconds=time.perf_counter() - t0,
                         note=f"onnxruntime raised: {str(e).splitlines()[0][:200]}")
        return self._compare("reference", values, level, got, dict(zip(self.out_names, truth, strict=True)), t0)


def size_like_scalars(model: onnx.ModelProto, statics: dict[str, int], report: VerifyReport,
                      batches: set[str] = frozenset()) -> list[Check]:
    """Scalars left in the rewritten graph that look like a folded size (``s``, ``1/s``, ``s**-0.5``,
    ``s**0.5`` for an exported size ``s`` >= 4) and feed arithmetic, or equal ``s`` and feed a position
    look-up or comparison (the position ``past`` of a decode step exported at ``seq`` 1), for a symbol
    that no oracle checked at another size: each is a failed check, since a folded ``x.size(1) ** -0.5``
    would be silently wrong there while a hyperparameter of that value would be right. A ``--reference`` settles it. The
    per-sample oracle counts only for ``batches`` (axis-0 symbols): it runs the original at its own size,
    so on any other axis it cannot see a folded length."""
    checked = {s for c in report.checks if c.status == "passed" for s, v in c.shape.items()
               if v != statics.get(s) and (c.oracle != "per-sample" or s in batches)}
    arithmetic = {"Mul", "Div", "Pow", "Sqrt", "Add", "Sub"}
    positional = {"Gather", "MatMul", "LessOrEqual", "Less", "GreaterOrEqual", "Greater"}  # a folded position id
    users: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.op_type)
    scalars = [(t.name, helper.tensor_dtype_to_np_dtype(t.data_type), onnx.numpy_helper.to_array(t))
               for t in model.graph.initializer if int(np.prod(t.dims)) == 1 and not t.name.startswith("dynify/")]
    scalars += [(n.output[0], None, onnx.numpy_helper.to_array(n.attribute[0].t)) for n in model.graph.node
                if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
                and int(np.prod(n.attribute[0].t.dims)) == 1]
    out = []
    for s, size in statics.items():
        if s in checked or size < 4:
            continue
        forms = {"": size, "1/": 1 / size, "**-0.5 of ": size ** -0.5, "sqrt of ": size ** 0.5}
        for name, _, arr in scalars:
            v = float(arr.reshape(-1)[0]) if arr.dtype.kind in "iuf" else None
            if v is None or not users.get(name, set()) & (arithmetic | positional):
                continue
            if arr.dtype.kind != "f" or not users[name] & arithmetic:  # a lone position: only the size itself
                hit = "" if v == size and users[name] & positional else None
            else:
                hit = next((f for f, x in forms.items() if np.isclose(v, x, rtol=1e-6)), None)
            if hit is not None:
                out.append(Check("scalar", {s: size}, "-", "failed", note=(
                    f"constant '{name}' = {v:g} is {hit}{s}'s exported size and feeds "
                    f"{'arithmetic' if users[name] & arithmetic else 'a position look-up'}; no oracle "
                    f"checked other {s} sizes, so a folded size cannot be ruled out: give --reference exports")))
    return out
