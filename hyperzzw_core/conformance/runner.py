"""Run golden cases against an implementation and judge them under the tolerance policy."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from ..reference import flatten
from ..testing.tolerance import check_close
from .goldens import GoldenCase, load_cases, to_float32
from .protocol import Implementation

DTYPES = ("float64", "float32")


@dataclass
class CaseResult:
    """One (operator, case, dtype, forward|gradient) check."""

    op: str
    case: str
    dtype: str
    kind: str
    status: str
    """"pass", "fail" (values outside tolerance), or "error" (exception, shape, dtype)."""
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    message: str = ""

    @property
    def id(self) -> str:
        return f"{self.op}[{self.case}]-{self.dtype}-{self.kind}"

    def to_dict(self) -> dict:
        return asdict(self)


def _leaves(value) -> dict[str, object]:
    if isinstance(value, (tuple, list, dict)):
        return flatten(list(value) if isinstance(value, tuple) else value)
    return {"": value}


def _judge(impl: Implementation, got, expected, low, dtype: str) -> tuple[str, float, float, str]:
    """Compare leaf by leaf; returns (status, max abs, max rel, message)."""
    g_leaves, e_leaves, l_leaves = impl.output_leaves(got), _leaves(expected), _leaves(low)
    if set(g_leaves) != set(e_leaves):
        return ("error", np.inf, np.inf, f"output structure differs: got leaves {sorted(g_leaves)[:6]}, "
                f"expected {sorted(e_leaves)[:6]}")
    worst_abs = 0.0
    scale = max([float(np.abs(np.asarray(e)).max()) for e in e_leaves.values() if np.size(e)] + [0.0])
    messages = []
    status = "pass"
    for key, e in e_leaves.items():
        name = key or "output"
        try:
            a = impl.to_numpy(g_leaves[key]) if g_leaves[key] is not None else None
        except Exception as exc:  # noqa: BLE001 - reported per case
            return "error", np.inf, np.inf, f"{name}: cannot convert to NumPy: {exc}"
        if a is None:
            return "error", np.inf, np.inf, f"{name}: missing (None)"
        if a.shape != np.shape(e):
            return "error", np.inf, np.inf, f"{name}: wrong shape {a.shape}, expected {np.shape(e)}"
        raw = g_leaves[key]
        got_dtype = str(getattr(raw, "dtype", a.dtype)).replace("torch.", "")
        if np.issubdtype(np.asarray(e).dtype, np.floating) and got_dtype != dtype:
            return "error", np.inf, np.inf, f"{name}: wrong dtype {got_dtype}, expected {dtype}"
        if not np.all(np.isfinite(a)):
            return "error", np.inf, np.inf, f"{name}: contains NaN or Inf"
        res = check_close(a, e, dtype=dtype, ref_low=l_leaves[key] if dtype == "float32" else None, scale=scale)
        worst_abs = max(worst_abs, res.max_abs_error)
        if not res.passed:
            status = "fail"
            messages.append(f"{name}: {res}")
    # relative to the largest magnitude anywhere in the output (or gradient) tree
    worst_rel = worst_abs / scale if scale > 0 else (0.0 if worst_abs == 0 else np.inf)
    return status, worst_abs, worst_rel, "; ".join(messages)


def _inputs(case: GoldenCase, dtype: str) -> tuple:
    return case.args if dtype == "float64" else to_float32(case.args)


def run_case(impl: Implementation, case: GoldenCase, dtype: str, gradients: bool = True) -> list[CaseResult]:
    """Forward (and, where the implementation exposes them, gradient) checks of one case."""
    results = []
    fn = impl.op(case.op)
    try:
        args = impl.convert(_inputs(case, dtype))
        got = fn(*args, **case.kwargs)
        status, ea, er, msg = _judge(impl, got, case.output(), case.output(low=True), dtype)
    except Exception as exc:  # noqa: BLE001 - an implementation's failure is a result, not a crash
        status, ea, er = "error", np.inf, np.inf
        msg = f"{type(exc).__name__}: {exc}".strip() + " | " + traceback.format_exc(limit=-1).strip().splitlines()[-1]
    results.append(CaseResult(case.op, case.label, dtype, "forward", status, ea, er, msg))
    diff = [i for i in case.differentiable if case.gradient(i) is not None]
    if not gradients or not diff or not impl.has_gradients(case.op) or "cot" not in case.arrays:
        return results
    for i in diff:
        try:
            args = impl.convert(_inputs(case, dtype))
            cot = case.cotangent()
            cot = impl.convert(cot if dtype == "float64" else to_float32(cot))
            grads = impl.vjp(case.op, args, case.kwargs, cot, case.differentiable)
            g = grads[case.differentiable.index(i)]
            status, ea, er, msg = _judge(impl, g, case.gradient(i), case.gradient(i, low=True), dtype)
        except Exception as exc:  # noqa: BLE001
            status, ea, er, msg = "error", np.inf, np.inf, f"{type(exc).__name__}: {exc}"
        results.append(CaseResult(case.op, case.label, dtype, f"gradient[arg{i}]", status, ea, er, msg))
    return results


def planned_cases(impl: Implementation, ops: Iterable[str] | None = None) -> list[GoldenCase]:
    """The golden cases of every operator the implementation covers (optionally only ``ops``)."""
    cases = load_cases(list(ops) if ops else None)
    return [c for c in cases if impl.covers(c.op)]


def run(impl: Implementation | str | object, *, ops: Iterable[str] | None = None, dtypes: Iterable[str] = ("float64",),
        gradients: bool = True, device: str | None = None) -> list[CaseResult]:
    """Every covered case in every requested dtype."""
    if not isinstance(impl, Implementation):
        impl = Implementation(impl, device=device)
    dtypes = list(dtypes)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {d!r}")
    results = []
    for case in planned_cases(impl, ops):
        for d in dtypes:
            results.extend(run_case(impl, case, d, gradients))
    return results


def summarize(results: list[CaseResult]) -> list[dict]:
    """One row per (operator, dtype): cases, worst errors, pass/fail."""
    rows: dict[tuple[str, str], dict] = {}
    for r in results:
        row = rows.setdefault((r.op, r.dtype), {"op": r.op, "dtype": r.dtype, "cases": set(), "checks": 0,
                                                "fwd_abs": 0.0, "fwd_rel": 0.0, "grad_rel": 0.0,
                                                "failed": 0, "errors": 0})
        row["cases"].add(r.case)
        row["checks"] += 1
        key = "fwd" if r.kind == "forward" else "grad"
        if key == "fwd":
            row["fwd_abs"] = max(row["fwd_abs"], r.max_abs_error)
            row["fwd_rel"] = max(row["fwd_rel"], r.max_rel_error)
        else:
            row["grad_rel"] = max(row["grad_rel"], r.max_rel_error)
        row["failed"] += r.status == "fail"
        row["errors"] += r.status == "error"
    out = []
    for row in rows.values():
        row["cases"] = len(row["cases"])
        row["result"] = "PASS" if not row["failed"] and not row["errors"] else "FAIL"
        out.append(row)
    return out


def format_table(results: list[CaseResult]) -> str:
    """A plain-text table (operator, dtype, cases, worst errors, result) plus failure details."""
    rows = summarize(results)
    head = f"{'operator':<30} {'dtype':<8} {'cases':>5} {'checks':>6} {'fwd max abs':>12} {'fwd max rel':>12} " \
           f"{'grad max rel':>12}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['op']:<30} {r['dtype']:<8} {r['cases']:>5} {r['checks']:>6} {r['fwd_abs']:>12.3e} "
                     f"{r['fwd_rel']:>12.3e} {r['grad_rel']:>12.3e}  {r['result']}")
    bad = [r for r in results if r.status != "pass"]
    n_ok = sum(r.status == "pass" for r in results)
    lines.append(f"{n_ok} passed, {len(bad)} failed")
    for r in bad[:50]:
        lines.append(f"  {r.status.upper()} {r.id}: {r.message}")
    if len(bad) > 50:
        lines.append(f"  … and {len(bad) - 50} more")
    return "\n".join(lines)
