"""Per-operator benchmarks: every backend, both dtypes, forward and forward + backward, sizes swept.

Backends: ``reference`` (the NumPy ground truth; forward + backward = forward and the hand-written
VJP of ``hyperzzw_core.testing.REGISTRY``), ``core-numpy`` (the array-API core on NumPy; forward
only: the core has no autodiff), ``torch-cpu`` (the core on torch tensors, autograd backward) and,
where present, ``torch-cuda`` and ``cupy`` (forward only).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import hyperzzw_core as hz
from hyperzzw_core import reference as R
from hyperzzw_core.testing import REGISTRY

from .costs import GELU, SILU, Cost, Model, block_costs
from .timing import measure

Args = tuple[tuple, dict]


# ----------------------------------------------------------------------------------- inputs


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dt: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dt)


def _lin(rng: np.random.Generator, o: int, i: int, dt: str) -> dict:
    return {
        "weight": (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dt),
        "bias": (0.1 * rng.standard_normal((o,))).astype(dt),
    }


def _cast(tree: Any, dt: str) -> Any:
    return R.tree_map(lambda a: np.asarray(a, dtype=dt), tree)


@dataclass(frozen=True)
class OpCase:
    """One operator at one kind of input: how to build inputs of size (B, C, H) and what it costs."""

    label: str
    name: str
    build: Callable[[np.random.Generator, int, int, int, str], Args]
    cost: Callable[[int, int, int, int], tuple[Cost, Cost]]


def _cost(fn: Callable[[Model], None], s: int) -> tuple[Cost, Cost]:
    m = Model(s)
    fn(m)
    return m.t.total(False), m.t.backward()


def _x(rng, b, c, h, dt):
    return _normal(rng, (b, c, h, h), dt)


def _block_cfg(c: int, h: int) -> R.TerminatorConfig:
    return R.cifar10().replace(input_shape=(c, h, h))


def _sfne_build(rng, b, c, h, dt):
    cfg = _block_cfg(c, h)
    p = _cast(R.init_block(rng, cfg, 0), dt)
    return (p, _x(rng, b, c, h, dt), None, None), {"groups": cfg.ibs_groups}


def _sfne_cost(b, c, h, s):
    t = block_costs(_block_cfg(c, h), 0, b, s, train=False)
    return t.total(False), t.backward()


def _rgu_cost(m: Model, b: int, c: int, n: int) -> None:
    for _ in range(3):
        m.linear(b, c, c, n)
    m.binary(b * c * n)
    m.standardize(b * c * n)
    m.unary(b * c * n, GELU)
    m.binary(b * c * n, n, product=False)
    m.linear(b, c, c, n)


def _global_cost(m: Model, b: int, c: int, h: int) -> None:
    m.binary(b * c * h * h, c * h * h)
    m.global_product(b, c, h, h)


def _hci_cost(m: Model, b: int, c: int, h: int) -> None:
    m.mfn(c, 1, 32, 2, 1)
    m.mean(b * c * h * h, b * c)
    m.binary(b * c * h * h, b * c)


def _magnet_l_cost(m: Model, b: int, c: int, h: int) -> None:
    m.linear(1, h, 9, b * c * h, cat="slow")
    m.linear(1, h, 9, b * c * 9, cat="slow")
    m.mfn(81, 2, 32, 2, c, ctx=True)


def _local_cost(m: Model, b: int, c: int, n: int, k: int) -> None:
    m.depthwise(b, c, n, k * k)
    m.linear(b, c, c, n)
    m.standardize(b * c * n)
    m.unary(b * c * n, GELU)


def _hi_cost(m: Model, b: int, c: int, h: int) -> None:
    n = b * c * h * h
    m.mfn(c, 1, 16, 2, 1)
    m.mfn(h * h, 2, 64, 2, 1)
    m.mean(n, b * c)
    m.mean(n, b * h * h)
    m.binary(n, b * h * h)
    m.unary(n, 4)
    m.binary(n)


CASES: list[OpCase] = [
    OpCase(
        "pointwise_linear",
        "pointwise_linear",
        lambda rng, b, c, h, dt: ((_lin(rng, c, c, dt), _x(rng, b, c, h, dt)), {}),
        lambda b, c, h, s: _cost(lambda m: m.linear(b, c, c, h * h), s),
    ),
    OpCase(
        "bottleneck (10C→2C)",
        "bottleneck",
        lambda rng, b, c, h, dt: ((_lin(rng, 2 * c, 10 * c, dt), _x(rng, b, 10 * c, h, dt)), {}),
        lambda b, c, h, s: _cost(lambda m: m.linear(b, 10 * c, 2 * c, h * h), s),
    ),
    OpCase(
        "instance_standardize",
        "instance_standardize",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt),), {}),
        lambda b, c, h, s: _cost(lambda m: m.standardize(b * c * h * h), s),
    ),
    OpCase(
        "batch_standardize",
        "batch_standardize",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt),), {}),
        lambda b, c, h, s: _cost(lambda m: m.standardize(b * c * h * h), s),
    ),
    OpCase(
        "g_ibs",
        "g_ibs",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt),), {"groups": 12}),
        lambda b, c, h, s: _cost(lambda m: m.standardize(b * c * h * h), s),
    ),
    OpCase(
        "gelu",
        "gelu",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt),), {}),
        lambda b, c, h, s: _cost(lambda m: m.unary(b * c * h * h, GELU), s),
    ),
    OpCase(
        "si_glu",
        "si_glu",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt),), {}),
        lambda b, c, h, s: _cost(lambda m: m.unary(b * c * h * h, SILU), s),
    ),
    OpCase(
        "hyperzzw_global",
        "hyperzzw_global",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt), 0.3 * _x(rng, 1, c, h, dt), _x(rng, b, c, h, dt)), {}),
        lambda b, c, h, s: _cost(lambda m: _global_cost(m, b, c, h), s),
    ),
    OpCase(
        "depthwise_conv k=3",
        "depthwise_conv",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt), _normal(rng, (c, 1, 3, 3), dt)), {}),
        lambda b, c, h, s: _cost(lambda m: m.depthwise(b, c, h * h, 9), s),
    ),
    OpCase(
        "depthwise_conv k=9",
        "depthwise_conv",
        lambda rng, b, c, h, dt: ((_x(rng, b, c, h, dt), _normal(rng, (c, 1, 9, 9), dt)), {}),
        lambda b, c, h, s: _cost(lambda m: m.depthwise(b, c, h * h, 81), s),
    ),
    OpCase(
        "local_conv k=9",
        "local_conv",
        lambda rng, b, c, h, dt: ((_lin(rng, c, c, dt), _x(rng, b, c, h, dt), _normal(rng, (c, 1, 9, 9), dt)), {}),
        lambda b, c, h, s: _cost(lambda m: _local_cost(m, b, c, h * h, 9), s),
    ),
    OpCase(
        "rgu",
        "rgu",
        lambda rng, b, c, h, dt: (
            (
                {
                    **{n: _lin(rng, c, c, dt) for n in ("w_k", "w_v", "w_q", "w_y")},
                    "bias_p": 0.1 * _normal(rng, (h, h), dt),
                },
                _x(rng, b, c, h, dt),
            ),
            {},
        ),
        lambda b, c, h, s: _cost(lambda m: _rgu_cost(m, b, c, h * h), s),
    ),
    OpCase(
        "hyper_channel_interaction",
        "hyper_channel_interaction",
        lambda rng, b, c, h, dt: (({"channel": _cast(R.init_magnet_gc(rng, c, 32, 2), dt)}, _x(rng, b, c, h, dt)), {}),
        lambda b, c, h, s: _cost(lambda m: _hci_cost(m, b, c, h), s),
    ),
    OpCase(
        "hyper_interaction",
        "hyper_interaction",
        lambda rng, b, c, h, dt: (
            (
                {
                    "channel": _cast(R.init_magnet_gc(rng, c, 16, 2), dt),
                    "spatial": _cast(R.init_magnet_g(rng, (h, h), 64, 1, 2), dt),
                },
                _x(rng, b, c, h, dt),
                _x(rng, b, c, h, dt),
            ),
            {},
        ),
        lambda b, c, h, s: _cost(lambda m: _hi_cost(m, b, c, h), s),
    ),
    OpCase(
        "magnet_g (K_g on H×H)",
        "magnet_g",
        lambda rng, b, c, h, dt: ((_cast(R.init_magnet_g(rng, (h, h), 64, c, 2), dt),), {}),
        lambda b, c, h, s: _cost(lambda m: m.mfn(h * h, 2, 64, 2, c), s),
    ),
    OpCase(
        "magnet_l k=9",
        "magnet_l",
        lambda rng, b, c, h, dt: ((_cast(R.init_magnet_l(rng, 9, 2, 32, c, 2), dt), _x(rng, b, c, h, dt)), {}),
        lambda b, c, h, s: _cost(lambda m: _magnet_l_cost(m, b, c, h), s),
    ),
    OpCase("sfne_block (block 0, bf 4)", "sfne_block", _sfne_build, _sfne_cost),
]

CASE_BY_LABEL = {c.label: c for c in CASES}


# --------------------------------------------------------------------------------- backends


def available_backends() -> list[str]:
    out = ["reference", "core-numpy"]
    try:
        import torch

        out.append("torch-cpu")
        if torch.cuda.is_available():
            out.append("torch-cuda")
    except ImportError:  # pragma: no cover
        pass
    try:
        import cupy

        cupy.zeros(1)
        out.append("cupy")
    except Exception:  # broad on purpose: any import or device failure: no CuPy backend
        pass
    return out


def _accepts_check_finite(fn: Callable[..., Any]) -> bool:
    return "check_finite" in inspect.signature(fn).parameters


def _tree_convert(obj: Any, conv: Callable[[np.ndarray], Any]) -> Any:
    if isinstance(obj, np.ndarray):
        return conv(obj)
    if isinstance(obj, dict):
        return {k: _tree_convert(v, conv) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tree_convert(v, conv) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_tree_convert(v, conv) for v in obj)
    return obj


def _leaves(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _leaves(v)]
    return [obj]


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs (parameters, views
    of them, and inputs excluded): the activation memory of a training step, measured exactly."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base  # a view of a parameter (W.expand(…)) is the parameter
        if not (base.is_leaf and base.requires_grad) and t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return int(sum(seen.values()))


def runners(
    backend: str, case: OpCase, args: tuple, kwargs: dict, dtype: str
) -> tuple[Callable[[], Any], Callable[[], Any] | None, Callable[[], Any] | None]:
    """(forward, forward + backward or None, what to call for the saved-tensor count or None)."""
    spec = REGISTRY[case.name]
    if backend == "reference":
        fn = spec.reference
        kw = dict(kwargs, check_finite=False) if _accepts_check_finite(fn) else dict(kwargs)
        out = fn(*args, **kw)
        rng = np.random.default_rng(1)
        cot = (
            tuple(rng.standard_normal(np.shape(o)).astype(dtype) for o in out)
            if isinstance(out, tuple)
            else rng.standard_normal(np.shape(out)).astype(dtype)
        )
        if spec.vjp is None:
            return (lambda: fn(*args, **kw)), None, None
        return (lambda: fn(*args, **kw)), (lambda: (fn(*args, **kw), spec.vjp(args, kwargs, cot))), None
    core = getattr(hz, case.name)
    kw = dict(kwargs, check_finite=False) if _accepts_check_finite(core) else dict(kwargs)
    if backend == "core-numpy":
        return (lambda: core(*args, **kw)), None, None
    if backend == "cupy":
        import cupy

        cargs = _tree_convert(args, cupy.asarray)

        def fwd_cupy() -> Any:
            out = core(*cargs, **kw)
            cupy.cuda.Device().synchronize()
            return out

        return fwd_cupy, None, None
    import torch

    device = "cuda" if backend == "torch-cuda" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    targs = list(_tree_convert(args, lambda a: torch.from_numpy(a).to(device)))
    leaves = []
    for i in spec.differentiable:
        if i < len(targs) and targs[i] is not None:
            for t in _leaves(targs[i]):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    t.requires_grad_(True)
                    leaves.append(t)

    def fwd() -> Any:
        with torch.no_grad():
            out = core(*targs, **kw)
        sync()
        return out

    with torch.no_grad():
        out0 = core(*targs, **kw)
    outs0 = list(out0) if isinstance(out0, tuple) else [out0]
    gen = torch.Generator(device=device).manual_seed(1)
    cots = [torch.randn(o.shape, dtype=o.dtype, device=device, generator=gen) for o in outs0]

    def fwd_bwd() -> Any:
        for t in leaves:
            t.grad = None
        out = core(*targs, **kw)
        outs = list(out) if isinstance(out, tuple) else [out]
        torch.autograd.backward(outs, cots)
        sync()

    def fwd_only_graph() -> Any:
        return core(*targs, **kw)

    return fwd, (fwd_bwd if leaves else None), (fwd_only_graph if leaves else None)


# ------------------------------------------------------------------------------------- sweep


def run_sweep(
    *,
    backends: list[str],
    dtypes: list[str],
    sizes: list[tuple[int, int, int]],
    cases: list[OpCase],
    peaks: dict[str, Any],
    reps: int,
    budget: float,
    cutoff: float,
    sweep: str,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Time every case × backend × dtype × size (B, C, H), forward and forward + backward.

    Along a sweep, a (case, backend, dtype, mode) whose median exceeded ``cutoff`` seconds is not
    run at the larger sizes (its growth is visible already); those rows are recorded as skipped.
    """
    from .machine import peak_for

    rows: list[dict[str, Any]] = []
    for case in cases:
        for backend in backends:
            for dtype in dtypes:
                s = np.dtype(dtype).itemsize
                stopped: set[str] = set()
                for b, c, h in sizes:
                    rng = np.random.default_rng([b, c, h, sum(map(ord, case.label))])
                    args, kwargs = case.build(rng, b, c, h, dtype)
                    fwd, fwd_bwd, graph = runners(backend, case, args, kwargs, dtype)
                    cost_f, cost_b = case.cost(b, c, h, s)
                    pf, pb = peak_for(peaks, backend, dtype)
                    for mode, fn, cost in (("fwd", fwd, cost_f), ("fwd+bwd", fwd_bwd, cost_f + cost_b)):
                        if fn is None:
                            continue
                        row = {
                            "sweep": sweep,
                            "op": case.label,
                            "backend": backend,
                            "dtype": dtype,
                            "mode": mode,
                            "B": b,
                            "C": c,
                            "H": h,
                            "flops": cost.flops,
                            "bytes": cost.bytes,
                        }
                        if mode in stopped:
                            row["skipped"] = f"slower than {cutoff:g} s at a smaller size"
                            rows.append(row)
                            continue
                        t = measure(fn, reps=reps, budget=budget, min_reps=min(3, reps))
                        bound = max(cost.flops / pf, cost.bytes / pb)
                        row.update(
                            median=t.median,
                            min=t.min,
                            reps=t.reps,
                            flops_frac=cost.flops / t.median / pf,
                            bytes_frac=cost.bytes / t.median / pb,
                            roofline_frac=bound / t.median,
                        )
                        if mode == "fwd+bwd" and graph is not None:
                            row["saved_bytes"] = saved_tensor_bytes(graph)
                        rows.append(row)
                        if t.median > cutoff:
                            stopped.add(mode)
                        log(
                            f"  {case.label:28s} {backend:10s} {dtype:7s} {mode:7s} B={b:<3d} C={c:<4d} H={h:<4d} "
                            f"{t.median * 1e3:9.2f} ms  roofline {row['roofline_frac']:.0%}"
                        )
    return rows
