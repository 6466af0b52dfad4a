"""Run golden cases against an implementation and judge them under the tolerance policy.

Two ways to run:

* in this process (:func:`run` with ``isolate=False``, the pytest plugin): for implementation
  objects. Anything the port raises, ``SystemExit`` and ``KeyboardInterrupt`` included, is a result
  of its case; there is no timeout (use pytest-timeout in the plugin).
* isolated (:func:`run` with ``isolate=True``, what ``hyperzzw verify`` does): the port runs in a
  worker process (:mod:`.isolate`), so a port that hangs is stopped after ``timeout`` seconds per
  case, and a port that ends its process (``os._exit``, a segfault) fails its case; the run goes on.

Inputs are handed to the port as copies; a port that modifies them in place fails that check
("modified its input … in place") instead of corrupting later cases.
"""

from __future__ import annotations

import difflib
import math
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..reference import flatten
from ..testing.tolerance import check_close
from .goldens import GOLDEN_DIR, GoldenCase, kit_operators, load_cases, to_float32
from .protocol import Implementation

DTYPES = ("float64", "float32")
STATUSES = ("pass", "fail", "error", "timeout", "crash")
_KIT_DIR = str(Path(__file__).resolve().parent)


@dataclass
class CaseResult:
    """One (operator, case, dtype, forward|gradient) check."""

    op: str
    case: str
    dtype: str
    kind: str
    status: str
    """"pass", "fail" (values outside tolerance), "error" (exception, shape, dtype, NaN, in-place
    modification of an input), "timeout" (the case ran past ``timeout``) or "crash" (the port ended
    its process)."""
    max_abs_error: float | None = None
    """None where no comparison was made (an error before any value was compared)."""
    max_rel_error: float | None = None
    message: str = ""
    location: str = ""
    """file:line (function) where the port raised, when it raised."""

    @property
    def id(self) -> str:
        return f"{self.op}[{self.case}]-{self.dtype}-{self.kind}"

    def to_dict(self) -> dict:
        """Strict-JSON-safe: infinite or NaN errors become None."""
        d = asdict(self)
        for k in ("max_abs_error", "max_rel_error"):
            v = d[k]
            d[k] = None if v is None or not math.isfinite(v) else float(v)
        return d


# ----------------------------------------------------------------------------- coverage


@dataclass
class Coverage:
    """Which kit operators a port exposes, which it lacks, and its public names that are not operators."""

    checked: list[str]
    missing: list[str]
    extra: list[str]
    near_misses: dict[str, str] = field(default_factory=dict)
    """public name → the kit operator it probably meant (a misspelling: an error)."""

    def to_dict(self) -> dict:
        return asdict(self)


_HOOKS = {"from_numpy", "to_numpy", "hyperzzw_vjp", "hyperzzw_autograd"}


def coverage_of(public: Iterable[str], ops: list[str]) -> Coverage:
    """Coverage from the port's public callable names; near misses found with :mod:`difflib`.

    A name is a near miss when it is not a kit operator (nor ``<op>_vjp`` nor a protocol hook) and is
    close (ratio ≥ 0.85) to a kit operator the port lacks, e.g. ``hyperzzw_globl``.
    """
    public = sorted(set(public))
    checked = [o for o in ops if o in public]
    missing = [o for o in ops if o not in public]
    known = set(ops) | {f"{o}_vjp" for o in ops} | _HOOKS
    extra = [n for n in public if n not in known]
    near = {}
    for n in extra:
        stem = n[:-4] if n.endswith("_vjp") else n
        match = difflib.get_close_matches(stem, missing, n=1, cutoff=0.85)
        if match:
            near[n] = match[0] + ("_vjp" if n.endswith("_vjp") else "")
    return Coverage(checked, missing, extra, near)


# ------------------------------------------------------------------------------- judging


def _leaves(value: Any) -> dict[str, Any]:
    if isinstance(value, (tuple, list, dict)):
        return flatten(list(value) if isinstance(value, tuple) else value)
    return {"": value}


def _judge(impl: Implementation, got, expected, low, dtype: str) -> tuple[str, float | None, float | None, str]:
    """Compare leaf by leaf; returns (status, max abs, max rel, message)."""
    g_leaves, e_leaves, l_leaves = impl.output_leaves(got), _leaves(expected), _leaves(low)
    if set(g_leaves) != set(e_leaves):
        return (
            "error",
            None,
            None,
            f"output structure differs: got leaves {sorted(g_leaves)[:6]}, expected {sorted(e_leaves)[:6]}",
        )
    worst_abs = 0.0
    scale = max([float(np.abs(np.asarray(e)).max()) for e in e_leaves.values() if np.size(e)] + [0.0])
    messages = []
    status = "pass"
    for key, e in e_leaves.items():
        name = key or "output"
        try:
            a = impl.to_numpy(g_leaves[key]) if g_leaves[key] is not None else None
        except Exception as exc:  # broad on purpose: reported per case
            return "error", None, None, f"{name}: cannot convert to NumPy: {exc}"
        if a is None:
            return "error", None, None, f"{name}: missing (None)"
        if a.shape != np.shape(e):
            return "error", None, None, f"{name}: wrong shape {a.shape}, expected {np.shape(e)}"
        raw = g_leaves[key]
        got_dtype = str(getattr(raw, "dtype", a.dtype)).replace("torch.", "")
        if np.issubdtype(np.asarray(e).dtype, np.floating) and got_dtype != dtype:
            return "error", None, None, f"{name}: wrong dtype {got_dtype}, expected {dtype}"
        if not np.all(np.isfinite(a)):
            return "error", None, None, f"{name}: contains NaN or Inf"
        res = check_close(a, e, dtype=dtype, ref_low=l_leaves[key] if dtype == "float32" else None, scale=scale)
        worst_abs = max(worst_abs, res.max_abs_error)
        if not res.passed:
            status = "fail"
            messages.append(f"{name}: {res}")
    # relative to the largest magnitude anywhere in the output (or gradient) tree
    worst_rel = worst_abs / scale if scale > 0 else (0.0 if worst_abs == 0 else None)
    return status, worst_abs, worst_rel, "; ".join(messages)


def _inputs(case: GoldenCase, dtype: str) -> tuple:
    """Fresh copies of the case's inputs in ``dtype`` (the port may keep or modify them)."""
    args = case.args if dtype == "float64" else to_float32(case.args)
    return _copy(args)


def _copy(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value.copy() if isinstance(value, np.ndarray) else value


def modified_inputs(impl: Implementation, converted: tuple, original: tuple) -> list[str]:
    """Names (``arg1``, ``arg0.bias_p``) of the inputs whose values differ from ``original`` after a call."""
    changed = []
    for i, (c, o) in enumerate(zip(converted, original, strict=True)):
        o_leaves = _leaves(o) if isinstance(o, (dict, list)) else {"": o}
        c_leaves = _leaves(c) if isinstance(c, (dict, list)) else {"": c}
        for key, ov in o_leaves.items():
            if not isinstance(ov, np.ndarray) or key not in c_leaves:
                continue
            try:
                now = impl.to_numpy(c_leaves[key])
            except Exception:  # broad on purpose: a port's array we cannot read back is not our finding
                continue
            if now.shape != ov.shape or not np.array_equal(now, ov.astype(now.dtype, copy=False), equal_nan=True):
                changed.append(f"arg{i}" + (f".{key}" if key else ""))
    return changed


def raise_site(exc: BaseException, port_file: str | None) -> str:
    """``file:line (function)`` of the frame where the port raised.

    The innermost frame in the port's own file when there is one, else the innermost frame outside
    the conformance kit (e.g. a library the port called).
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__)]
    own = [f for f in frames if port_file and Path(f.filename).resolve() == Path(port_file).resolve()]
    outside = [f for f in frames if not str(Path(f.filename).resolve()).startswith(_KIT_DIR)]
    pick = (own or outside or frames)[-1] if frames else None
    return f"{pick.filename}:{pick.lineno} ({pick.name})" if pick is not None else ""


def _exception_result(impl: Implementation, case: GoldenCase, dtype: str, kind: str, exc: BaseException) -> CaseResult:
    text = str(exc).strip()
    if isinstance(exc, SystemExit):
        text = f"the port called sys.exit({exc.code!r})"
    elif isinstance(exc, KeyboardInterrupt):
        text = "the port raised KeyboardInterrupt"
    msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return CaseResult(case.op, case.label, dtype, kind, "error", None, None, msg, raise_site(exc, impl.file))


def _call(
    impl: Implementation, case: GoldenCase, dtype: str, kind: str, call: Callable[[tuple], Any]
) -> tuple[Any, CaseResult | None]:
    """Call the port on fresh copies of the inputs; an exception or an in-place edit is the result."""
    original = _inputs(case, dtype)
    try:
        args = impl.convert(_copy(original))
        got = call(args)
    except BaseException as exc:  # broad on purpose: SystemExit, KeyboardInterrupt: a port's, so a result
        return None, _exception_result(impl, case, dtype, kind, exc)
    changed = modified_inputs(impl, args, original)
    if changed:
        return None, CaseResult(
            case.op,
            case.label,
            dtype,
            kind,
            "error",
            None,
            None,
            f"modified its input {', '.join(changed)} in place (inputs must be left unchanged)",
        )
    return got, None


def _judged(
    impl: Implementation, case: GoldenCase, dtype: str, kind: str, got: Any, expected: Any, low: Any
) -> CaseResult:
    try:
        status, ea, er, msg = _judge(impl, got, expected, low, dtype)
    except BaseException as exc:  # broad on purpose: e.g. a port's to_numpy raising
        return _exception_result(impl, case, dtype, kind, exc)
    return CaseResult(case.op, case.label, dtype, kind, status, ea, er, msg)


def run_case(impl: Implementation, case: GoldenCase, dtype: str, gradients: bool = True) -> list[CaseResult]:
    """Forward (and, where the implementation exposes them, gradient) checks of one case.

    The gradient is computed once per case (one VJP call for all differentiable arguments) and
    judged per argument (``gradient[arg<i>]``); when the VJP call itself fails, one ``gradient``
    result carries the error.
    """
    fn = impl.op(case.op)
    if fn is None:  # planned_cases lists only the port's operators
        raise ValueError(f"{impl.name} does not define {case.op}")
    got, bad = _call(impl, case, dtype, "forward", lambda args: fn(*args, **case.kwargs))
    results = [bad or _judged(impl, case, dtype, "forward", got, case.output(), case.output(low=True))]
    diff = [i for i in case.differentiable if case.gradient(i) is not None]
    if not gradients or not diff or not impl.has_gradients(case.op) or "cot" not in case.arrays:
        return results
    cot = case.cotangent()
    cot = cot if dtype == "float64" else to_float32(cot)
    grads, bad = _call(
        impl,
        case,
        dtype,
        "gradient",
        lambda args: impl.vjp(case.op, args, case.kwargs, impl.convert(_copy(cot)), case.differentiable),
    )
    if bad is not None:
        return results + [bad]
    if len(grads) != len(case.differentiable):
        return results + [
            CaseResult(
                case.op,
                case.label,
                dtype,
                "gradient",
                "error",
                None,
                None,
                f"the VJP returned {len(grads)} cotangents, expected "
                f"{len(case.differentiable)} (one per differentiable argument "
                f"{list(case.differentiable)})",
            )
        ]
    for i in diff:
        results.append(
            _judged(
                impl,
                case,
                dtype,
                f"gradient[arg{i}]",
                grads[case.differentiable.index(i)],
                case.gradient(i),
                case.gradient(i, low=True),
            )
        )
    return results


def planned_cases(
    impl: Implementation, ops: Iterable[str] | None = None, directory: Path = GOLDEN_DIR
) -> list[GoldenCase]:
    """The golden cases of every operator the implementation covers (optionally only ``ops``)."""
    cases = load_cases(list(ops) if ops else None, directory)
    return [c for c in cases if impl.covers(c.op)]


def _check_dtypes(dtypes: Iterable[str]) -> list[str]:
    dtypes = list(dtypes)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {d!r}")
    return dtypes


Progress = Callable[[str, list[CaseResult]], None]
"""progress(op, results of that op): called once per operator as it finishes."""


def run(
    impl: Implementation | str | object,
    *,
    ops: Iterable[str] | None = None,
    dtypes: Iterable[str] = ("float64",),
    gradients: bool = True,
    device: str | None = None,
    isolate: bool = False,
    timeout: float | None = None,
    progress: Progress | None = None,
    directory: Path = GOLDEN_DIR,
) -> list[CaseResult]:
    """Every covered case in every requested dtype.

    ``isolate=True`` runs the port in a worker process with ``timeout`` seconds per case (``impl``
    must then be a target string: module, module:object or path/to/file.py).
    """
    dtypes = _check_dtypes(dtypes)
    ops = list(ops) if ops else None
    if isolate:
        from .isolate import run_isolated

        if not isinstance(impl, str):
            raise TypeError(
                "isolate=True needs the implementation as a target string (module, module:object or path/to/file.py)"
            )
        return run_isolated(
            impl,
            ops=ops,
            dtypes=dtypes,
            gradients=gradients,
            device=device,
            timeout=timeout,
            progress=progress,
            directory=directory,
        ).results
    if not isinstance(impl, Implementation):
        impl = Implementation(impl, device=device)
    results: list[CaseResult] = []
    current: list[CaseResult] = []
    cases = planned_cases(impl, ops, directory)
    for n, case in enumerate(cases):
        for d in dtypes:
            current.extend(run_case(impl, case, d, gradients))
        if n + 1 == len(cases) or cases[n + 1].op != case.op:
            if progress is not None:
                progress(case.op, current)
            results.extend(current)
            current = []
    return results


def coverage(impl: Implementation, directory: Path = GOLDEN_DIR) -> Coverage:
    """The coverage of an in-process implementation."""
    return coverage_of(impl.public_callables(), kit_operators(directory))


# ------------------------------------------------------------------------------ reporting


def _fmt(v: float | None) -> str:
    return "-" if v is None else ("inf" if not math.isfinite(v) else f"{v:.3e}")


def summarize(results: list[CaseResult]) -> list[dict]:
    """One row per (operator, dtype): cases, checks, worst errors (None: not compared), pass/fail."""
    rows: dict[tuple[str, str], dict] = {}
    for r in results:
        row = rows.setdefault(
            (r.op, r.dtype),
            {
                "op": r.op,
                "dtype": r.dtype,
                "cases": set(),
                "checks": 0,
                "grad_checks": 0,
                "fwd_abs": None,
                "fwd_rel": None,
                "grad_rel": None,
                "failed": 0,
                "errors": 0,
            },
        )
        row["cases"].add(r.case)
        row["checks"] += 1
        if r.kind == "forward":
            if r.status in ("pass", "fail"):
                row["fwd_abs"] = max(row["fwd_abs"] or 0.0, r.max_abs_error or 0.0)
                row["fwd_rel"] = max(row["fwd_rel"] or 0.0, r.max_rel_error or 0.0)
        else:
            row["grad_checks"] += 1
            if r.status in ("pass", "fail"):
                row["grad_rel"] = max(row["grad_rel"] or 0.0, r.max_rel_error or 0.0)
        row["failed"] += r.status == "fail"
        row["errors"] += r.status not in ("pass", "fail")
    out = []
    for row in rows.values():
        row["cases"] = len(row["cases"])
        row["result"] = "PASS" if not row["failed"] and not row["errors"] else "FAIL"
        for k in ("fwd_abs", "fwd_rel", "grad_rel"):
            if row[k] is not None and not math.isfinite(row[k]):
                row[k] = None
        out.append(row)
    return out


def format_rows(rows: list[dict], header: bool = True) -> list[str]:
    head = (
        f"{'operator':<30} {'dtype':<8} {'cases':>5} {'checks':>6} {'fwd max abs':>12} {'fwd max rel':>12} "
        f"{'grad max rel':>12}  result"
    )
    lines = [head, "-" * len(head)] if header else []
    for r in rows:
        lines.append(
            f"{r['op']:<30} {r['dtype']:<8} {r['cases']:>5} {r['checks']:>6} {_fmt(r['fwd_abs']):>12} "
            f"{_fmt(r['fwd_rel']):>12} {_fmt(r['grad_rel']):>12}  {r['result']}"
        )
    return lines


def format_coverage(cov: Coverage) -> list[str]:
    lines = [f"coverage: {len(cov.checked)} of {len(cov.checked) + len(cov.missing)} kit operators checked"]
    if cov.missing:
        lines.append(f"  not in the implementation: {', '.join(cov.missing)}")
    for name, meant in cov.near_misses.items():
        lines.append(f"  ERROR {name}: not a kit operator; did you mean {meant}?")
    others = [n for n in cov.extra if n not in cov.near_misses]
    if others:
        lines.append(
            f"  public callables that are not kit operators: {', '.join(others[:20])}"
            + (f" … and {len(others) - 20} more" if len(others) > 20 else "")
        )
    return lines


def format_table(results: list[CaseResult], cov: Coverage | None = None) -> str:
    """A plain-text table (operator, dtype, cases, worst errors, result), failure details, coverage.

    A "-" in an error column means nothing was compared there (no gradient checked, or only errors).
    """
    lines = format_rows(summarize(results))
    bad = [r for r in results if r.status != "pass"]
    n_ok = len(results) - len(bad)
    n_grad = sum(r.kind != "forward" for r in results)
    no_grad = sorted({r.op for r in results} - {r.op for r in results if r.kind != "forward"})
    lines.append(f"{n_ok} passed, {len(bad)} failed; {len(results) - n_grad} forward checks, {n_grad} gradient checks")
    if no_grad:
        lines.append(f"gradients not checked for: {', '.join(no_grad)}")
    for r in bad[:50]:
        where = f" [at {r.location}]" if r.location else ""
        lines.append(f"  {r.status.upper()} {r.id}: {r.message}{where}")
    if len(bad) > 50:
        lines.append(f"  … and {len(bad) - 50} more")
    if cov is not None:
        lines.extend(format_coverage(cov))
    return "\n".join(lines)


def progress_line(op: str, results: list[CaseResult], stream=None) -> None:
    """One line per finished operator (used by ``hyperzzw verify`` on stderr)."""
    bad = sum(r.status != "pass" for r in results)
    n_cases = len({(r.case, r.dtype) for r in results})
    print(
        f"hyperzzw verify: {op}: {n_cases} case-dtypes, {len(results)} checks, "
        f"{'PASS' if not bad else f'FAIL ({bad} failed)'}",
        file=stream or sys.stderr,
        flush=True,
    )
