"""The oracles: ground truth for the rewritten model from the original model (per sample, padded,
prefixed) or a reference export.

The original runs first, once per check shape and with optimisations disabled; its session is then
released and the rewritten model runs at each optimisation level in turn, so onnxruntime holds one model
at a time and the original's outputs serve every level."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..budget import peak_rss_mb
from ..dims import parse
from ..io import weight_bytes
from ..rewrite import SymbolRange
from ..spec import AxisSpec
from ..wire import file_view
from .feeds import InputSpec, inputs, make_feeds, settle_float_domain
from .report import Check, VerifyReport
from .tolerance import Tol, diff, noise, precision, tolerances

OPT_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _roles(inputs: list[InputSpec]) -> dict[str, str]:
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


def _session(model: bytes | str, level: str, provider: str, data_dir: str | None = None) -> ort.InferenceSession:
    """``model``: serialised bytes, or a file path (no bytes to make or hold). ``data_dir``: the folder
    external data locations are relative to (the model's, for bytes of a model read without its weights)."""
    so = ort.SessionOptions()
    if data_dir is not None and isinstance(model, bytes):
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", data_dir)
    so.graph_optimization_level = OPT_LEVELS[level]
    so.log_severity_level = 4
    return ort.InferenceSession(model, so, providers=[provider])


class Verifier:
    """Runs the oracles for one (original, rewritten) pair."""

    def __init__(self, original: onnx.ModelProto, rewritten: onnx.ModelProto, specs: list[AxisSpec],
                 outputs: dict[str, list[int | str | None]], provider: str = "CPUExecutionProvider", seed: int = 0,
                 ranges: dict[str, SymbolRange] | None = None, data_dir: str | None = None,
                 source: str | None = None, staged: str | None = None):
        """``source``: the file ``original`` was read from; ``staged``: a file holding ``rewritten``. Sessions
        are built from these files (onnxruntime reads a file faster than bytes, and nothing is serialised)."""
        self.data_dir = data_dir
        self._models = {"original": original, "rewritten": rewritten}
        # per model: its file, or its bytes serialised on first use; dropped when no session needs them
        self._files = {k: f for k, f in (("original", source), ("rewritten", staged)) if f}
        self._bytes: dict[str, tuple[bytes | str, str | None]] = {}  # per model: what its sessions load, and from where
        self._building = 0.0  # seconds spent serialising models and building sessions, in every phase
        t0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.inputs = inputs(original, specs)
        self.roles = _roles(self.inputs)
        self.outputs = outputs
        self.out_names = [o.name for o in rewritten.graph.output]
        self.provider = provider
        self.seed = seed
        self.ranges = ranges or {}
        self._sessions: dict[tuple[str, str], ort.InferenceSession] = {}
        self._ran: dict[bytes, list[np.ndarray]] = {}  # the original's outputs per distinct feeds (ground truth)
        self.statics = ({s: r.static for s, r in self.ranges.items()} if self.ranges else
                        {s.symbol: next(i.static[s.axis] for i in self.inputs if i.name == s.input) for s in specs})
        self.role_notes: dict[str, str] = {}
        for s, r in self.ranges.items():  # it moves with the symbols of its polynomial, never alone
            if r.equals is not None and s in self.roles:
                self.roles[s] = "derived"
        self.float_inputs = settle_float_domain(self.inputs, self.statics, self._run_original, seed)
        self.precision = precision(original)
        self.timings["setup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._settle_batch_roles()
        self._settle_token_roles()
        self.timings["role probes"] = time.perf_counter() - t0

    def _run_original(self, feeds: dict[str, np.ndarray], level: str = "disabled") -> list[np.ndarray]:
        return self.session("original", level).run(self.out_names, feeds)

    def _tolerances(self, prec: str, levels: list[str], plain: list[np.ndarray] | None = None
                    ) -> dict[str, dict[str, Tol]]:
        """Per optimisation level and output, from the compute precision; at level *all* also from the
        original's own noise (its outputs with optimisations disabled against all enabled, on the same
        check inputs at the exported shape): the optimiser may fuse the rewritten graph differently. With
        optimisations disabled both graphs run node by node, and the precision alone applies. Run after
        the ground truth, so the original's optimised session is built alone and released at once.
        ``plain``: the original's outputs on those inputs, when the ground truth already has them."""
        feeds = self._feeds(dict(self.statics)) if plain is None or "all" in levels else {}
        plain = plain if plain is not None else self._run_original(feeds)
        tols = {"disabled": tolerances(prec, self.out_names, plain, [0.0] * len(plain))}
        if "all" in levels:
            self._release("original", "disabled")
            try:
                nz = noise(plain, self._run_original(feeds, "all"))
            except Exception:  # the optimised original does not run: no noise measured, the precision alone
                nz = [0.0] * len(plain)
            self._release("original", "all")
            tols["all"] = tolerances(prec, self.out_names, plain, nz)
        return tols

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
                elif inp.is_float:  # a fresh draw from the same distribution (inside the op's domain)
                    b[inp.name][at] = inp.draw(np.random.default_rng(self.seed + 1), list(a[inp.name].shape))[at]
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
        """``which``'s session at ``level``, built on first use (the time counted in ``of which session builds``)."""
        key = (which, level)
        if key not in self._sessions:
            t0 = time.perf_counter()
            if which not in self._bytes:
                self._bytes[which] = self._loadable(which)
            model, folder = self._bytes[which]
            self._sessions[key] = _session(model, level, self.provider, folder)
            self._building += time.perf_counter() - t0
        return self._sessions[key]

    def _loadable(self, which: str) -> tuple[bytes | str, str | None]:
        """What ``which``'s sessions are built from, and the folder its external data is relative to: a
        view of its file that points at the weights inside it (:func:`wire.file_view`: nothing copied out of
        a parsed protobuf), else the file itself, else the model serialised."""
        file = self._files.get(which)
        if file is None:
            return self._models[which].SerializeToString(), self.data_dir
        view = file_view(self._models[which], file)
        return (file, None) if view is None else (view, str(Path(file).parent))

    def _release(self, which: str, level: str | None = None, keep_bytes: bool = True) -> None:
        """Drop ``which``'s session at ``level`` (every level when None), and its serialised bytes unless
        ``keep_bytes``."""
        for key in [k for k in self._sessions if k[0] == which and level in (None, k[1])]:
            del self._sessions[key]
        if not keep_bytes:
            self._bytes.pop(which, None)

    def run(self, shapes: list[dict[str, int]], levels: list[str], references: list[str],
            progress=None) -> VerifyReport:
        """The original's ground truth for every shape first (then its session and bytes are released),
        then the rewritten model at one optimisation level after the other, each level's session released
        before the next is built, and the references last. A shape no oracle covers runs at the last level
        only, the one deployments use: with no oracle a run shows only that the model runs there with the
        declared output shapes and finite values."""
        report = VerifyReport(provider=self.provider, float_inputs=self.float_inputs)
        t0 = time.perf_counter()
        truths = [self._ground_truth(values, self._feeds(values)) for values in shapes]
        self._ran.clear()
        blind = sum(t[1] is None for t in truths)  # shapes no oracle covers: run at the last level only
        total, done = (len(shapes) + len(references)) * len(levels) - blind * (len(levels) - 1), 0
        exported = next((t for v, (o, t, _) in zip(shapes, truths, strict=True) if o == "original" and t
                         and v == self.statics), None)
        self.tols = self._tolerances(self.precision, levels, exported and [exported[n] for n in self.out_names])
        self._release("original", keep_bytes=False)
        report.tolerances = {lv: {k: {"rtol": t.rtol, "atol": t.atol, "why": t.why} for k, t in tols.items()}
                             for lv, tols in self.tols.items()}
        spent = {"ground truth": time.perf_counter() - t0, "checks": 0.0, "references": 0.0}
        for i, level in enumerate(levels):
            last = i == len(levels) - 1
            checked = [(v, t) for v, t in zip(shapes, truths, strict=True) if last or t[1] is not None]
            for kind, items, check in (("checks", checked, self._check), ("references", references, self._reference)):
                t0 = time.perf_counter()
                for item in items:
                    report.checks.append(check(item, level))
                    done += 1
                    if progress:
                        progress(done, total)
                spent[kind] += time.perf_counter() - t0
            self._release("rewritten", level, keep_bytes=not last)
        report.timings = {**self.timings, **spent, "of which session builds": self._building}
        report.memory = self._memory()
        return report

    def _memory(self) -> dict:
        """What the checks held: one model at a time in onnxruntime (the original, then the rewritten
        model), the weights each brings, and the peak resident memory of this process so far."""
        held = {w: dict(zip(("inline_bytes", "external_bytes"), weight_bytes(m), strict=True))
                for w, m in self._models.items()}
        return {"models_held_at_once": 1, "weights": held, "peak_rss_mb": peak_rss_mb()}

    def _feeds(self, values: dict[str, int]) -> dict[str, np.ndarray]:
        """The check inputs at ``values``: the same on every call, so both models see them. With a batch
        symbol each sample is drawn on its own, seeded by its index and the other sizes: shapes that differ
        only in the batch share their first samples, and the original runs once per distinct group of them
        (:meth:`_run_once`)."""
        batch = next((s for s, r in self.roles.items() if r == "batch"), None)
        if batch is None:
            return make_feeds(self.inputs, values, np.random.default_rng([self.seed, *values.values()]))
        one = {**values, batch: 1}
        seed = [self.seed, *one.values()]
        parts = [make_feeds(self.inputs, one, np.random.default_rng(seed + ([j] if j else [])), first_row=j)
                 for j in range(values[batch])]
        feeds = {}
        for inp in self.inputs:
            axis = next((ax for ax, s in inp.symbols.items() if s == batch), None)
            feeds[inp.name] = parts[0][inp.name] if axis is None else \
                np.concatenate([p[inp.name] for p in parts], axis=axis)
        return feeds

    def _run_once(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The original's outputs with optimisations disabled, computed once per distinct ``feeds`` while
        the ground truth is gathered."""
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(feeds):
            a = np.ascontiguousarray(feeds[name])
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        key = h.digest()
        if key not in self._ran:
            self._ran[key] = self._run_original(feeds)
        return self._ran[key]

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

    def _check(self, item: tuple[dict[str, int], tuple], level: str) -> Check:
        """The rewritten model at one shape and level against the original's outputs ``item[1]``
        (oracle, truth, note) computed beforehand."""
        t0 = time.perf_counter()
        values, (oracle, truth, note) = item
        feeds = self._feeds(values)
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
            good, da, dr = diff(arr, exp, self.tols.get(level, self.tols["disabled"])[name])
            worst_abs, worst_rel = max(worst_abs, da), max(worst_rel, dr)
            if not good:
                ok = False
                notes.append(f"{name}: max abs diff {da:.3g}")
        return Check(oracle, values, level, "passed" if ok else "failed", worst_abs, worst_rel,
                     time.perf_counter() - t0, "; ".join(notes))

    def _ground_truth(self, values: dict[str, int], feeds: dict[str, np.ndarray]):
        """(oracle, outputs, note): what the original model gives for these feeds, by batching groups and
        padding sequences, with optimisations disabled (outputs None when no oracle applies)."""
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
            out = self._run_once(feeds)
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
            out = self._run_once(static_feeds)
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
        ref = onnx.load(path, load_external_data=False)
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
            truth = _session(path, level, self.provider).run(self.out_names, feeds)
        except Exception as e:  # any onnxruntime failure fails the check
            return Check("reference", values, level, "failed", seconds=time.perf_counter() - t0,
                         note=f"onnxruntime raised: {str(e).splitlines()[0][:200]}")
        return self._compare("reference", values, level, got, dict(zip(self.out_names, truth, strict=True)), t0)
