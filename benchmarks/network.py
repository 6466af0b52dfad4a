"""Whole-network benchmarks: the headline training step, the kernel cache, the reference against
torch, and the growth of time and memory with the input size and the batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from hyperzzw_core import reference as R

from .costs import network_costs, roofline_seconds, step_cost
from .machine import peak_for
from .timing import measure_interleaved, run_worker


def _cfg(h: int | None = None) -> R.TerminatorConfig:
    cfg = R.cifar10()
    return cfg if h is None else cfg.replace(input_shape=(3, h, h))


def judge(row: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    """Add the cost model's FLOPs/bytes and the fractions of the machine's limits to a row."""
    s = np.dtype(row["dtype"]).itemsize
    cost = step_cost(_cfg(row["H"]), row["B"], s, "train" if row["kind"] == "train" else "forward")
    pf, pb = peak_for(peaks, row["backend"], row["dtype"])
    t = row["median"]
    bound = roofline_seconds(cost, pf, pb)
    row.update(
        flops=cost.flops,
        bytes=cost.bytes,
        gflops_per_s=cost.flops / t / 1e9,
        gbytes_per_s=cost.bytes / t / 1e9,
        flops_frac=cost.flops / t / pf,
        bytes_frac=cost.bytes / t / pb,
        roofline_s=bound,
        roofline_frac=bound / t,
        bound_by="compute" if cost.flops / pf >= cost.bytes / pb else "memory",
        images_per_s=row["B"] / t,
    )
    return row


def _worker_row(spec: dict[str, Any], peaks: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    res = run_worker([json.dumps(spec)])
    row = {
        "backend": spec["backend"],
        "dtype": spec["dtype"],
        "kind": spec["kind"],
        "B": spec["B"],
        "H": spec.get("H") or 32,
        "median": res["median"],
        "min": res["min"],
        "max": res["max"],
        "reps": res["reps"],
        "first_call": res["first_call"],
        "peak_rss_delta": res["peak_delta"],
        "peak_rss": res["peak_rss"],
        "saved_bytes": res.get("saved_bytes"),
        "threads": res.get("threads"),
        "compiled": res.get("compiled", False),
        "profile": res.get("profile"),
    }
    judge(row, peaks)
    log(
        f"  network {row['backend']:10s} {row['dtype']:7s} {row['kind']:7s} B={row['B']:<3d} H={row['H']:<4d} "
        f"{row['median']:8.3f} s  peak +{row['peak_rss_delta'] / 2**20:8.1f} MiB  "
        f"roofline {row['roofline_frac']:.0%}"
    )
    return row


def growth(peaks: dict[str, Any], quick: bool, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Time and peak memory of the network against the input size H = W and the batch B."""
    rows = []
    hs = [8] if quick else [8, 16, 32, 64, 128]
    reps = 2 if quick else 3
    for h in hs:
        for kind in ("forward", "train"):
            rows.append(
                _worker_row(
                    {
                        "backend": "torch-cpu",
                        "dtype": "float32",
                        "kind": kind,
                        "B": 2,
                        "H": h,
                        "reps": reps,
                        "sweep": "H",
                    },
                    peaks,
                    log,
                )
                | {"sweep": "H"}
            )
    for h in hs[:3]:
        rows.append(
            _worker_row(
                {"backend": "reference", "dtype": "float64", "kind": "forward", "B": 2, "H": h, "reps": reps},
                peaks,
                log,
            )
            | {"sweep": "H"}
        )
        rows.append(
            _worker_row(
                {"backend": "core-numpy", "dtype": "float64", "kind": "forward", "B": 2, "H": h, "reps": reps},
                peaks,
                log,
            )
            | {"sweep": "H"}
        )
    for h in hs[:2]:
        rows.append(
            _worker_row(
                {"backend": "reference", "dtype": "float64", "kind": "train", "B": 2, "H": h, "reps": reps}, peaks, log
            )
            | {"sweep": "H"}
        )
    bs = [1] if quick else [1, 8, 32]
    h = 8 if quick else 32
    for b in bs:
        for kind in ("forward", "train"):
            if not quick and b == 32 and kind == "train":
                continue  # the headline measurement
            rows.append(
                _worker_row(
                    {"backend": "torch-cpu", "dtype": "float32", "kind": kind, "B": b, "H": h, "reps": reps}, peaks, log
                )
                | {"sweep": "B"}
            )
    return rows


def headline(peaks: dict[str, Any], quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The training step of cifar10() at batch 32 in float32 (fresh process: peak memory)."""
    spec: dict[str, Any] = {
        "backend": "torch-cpu",
        "dtype": "float32",
        "kind": "train",
        "B": 4 if quick else 32,
        "H": 8 if quick else 32,
        "reps": 2 if quick else 5,
        "profile": True,
    }
    row = _worker_row(spec, peaks, log)
    row["sweep"] = "B"
    t = network_costs(_cfg(spec["H"]), spec["B"], 4, train=True)
    row["breakdown"] = {
        c: {
            "fwd_flops": t.fwd[c].flops,
            "fwd_bytes": t.fwd[c].bytes,
            "bwd_flops": t.bwd[c].flops,
            "bwd_bytes": t.bwd[c].bytes,
        }
        for c in t.fwd
    }
    return row


def flop_counter_check(quick: bool) -> dict[str, Any]:
    """The model's matmul + convolution FLOPs against torch's FlopCounterMode (forward + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hyperzzw_core.adapters.torch import Terminator

    from .costs import network_costs

    b, h = (2, 8) if quick else (8, 32)
    cfg = _cfg(h)
    model = Terminator(cfg, 0).train()
    x = torch.randn(b, 3, h, h)
    labels = torch.zeros(b, dtype=torch.int64)
    with FlopCounterMode(display=False) as fc:
        loss = model.loss(x, labels)
    fwd = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    with FlopCounterMode(display=False) as fc:
        loss.backward()
    bwd = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    t = network_costs(cfg, b, 4, train=True)
    # forward: every batched product and convolution; backward: the batched products (the counter's
    # convolution_backward formula ignores groups, so it over-counts a depth-wise conv C-fold)
    counted_f = sum(fwd.get(k, 0) for k in ("aten.baddbmm", "aten.bmm", "aten.convolution"))
    counted_b = sum(bwd.get(k, 0) for k in ("aten.baddbmm", "aten.bmm"))
    model_f = sum(t.fwd[c].flops for c in ("gemm", "global", "conv"))
    model_b = sum(t.bwd[c].flops for c in ("gemm", "global"))
    return {
        "B": b,
        "H": h,
        "counter_fwd": counted_f,
        "model_fwd": model_f,
        "counter_bwd": counted_b,
        "model_bwd": model_b,
        "counter_mm": fwd.get("aten.mm", 0) + bwd.get("aten.mm", 0),
        "model_slow": t.fwd["slow"].flops + t.bwd["slow"].flops,
    }


def cache_speedup(quick: bool, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Eval forward with the kernel cache against without (interleaved, one process per batch)."""
    rows = []
    for b in [1] if quick else [1, 8, 32]:
        res = run_worker(
            [
                json.dumps(
                    {
                        "backend": "torch-cpu",
                        "dtype": "float32",
                        "kind": "cache",
                        "B": b,
                        "H": 8 if quick else 32,
                        "reps": 3 if quick else 7,
                    }
                )
            ],
            timeout=900,
        )
        rows.append(res)
        log(
            f"  eval forward B={b:<3d} cached {res['cached']['median'] * 1e3:8.2f} ms, "
            f"uncached {res['uncached']['median'] * 1e3:8.2f} ms: {res['speedup']:.2f}x "
            f"(slow kernels {res['kernels']['median'] * 1e3:.2f} ms = {res['kernel_share']:.0%}: "
            f"at most {res['bound']:.2f}x)"
        )
    return rows


def reference_vs_torch(quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """reference.terminator_forward against the torch CPU float64 forward (and the core on NumPy)
    on a (8, 3, 32, 32) float64 batch, interleaved in one process."""
    res = run_worker(
        [
            json.dumps(
                {
                    "backend": "compare",
                    "dtype": "float64",
                    "kind": "compare",
                    "B": 2 if quick else 8,
                    "H": 8 if quick else 32,
                    "reps": 2 if quick else 5,
                }
            )
        ],
        timeout=900,
    )
    log(
        f"  reference {res['reference']['median']:.3f} s, core-numpy {res['core-numpy']['median']:.3f} s, "
        f"torch float64 {res['torch-cpu']['median']:.3f} s: reference/torch = {res['ratio']:.2f}x"
    )
    return res


def run_in_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``cache`` and ``compare`` kinds (called by ``_worker``)."""
    import torch

    from hyperzzw_core.adapters.torch import Terminator

    cfg = _cfg(spec["H"])
    b = spec["B"]
    rng = np.random.default_rng(0)
    if spec["kind"] == "cache":
        from hyperzzw_core import _backend

        model = Terminator(cfg, 0).eval()
        x = torch.from_numpy(rng.standard_normal((b,) + cfg.input_shape).astype(np.float32))

        def cached() -> None:
            with torch.no_grad():
                model(x)

        def uncached() -> None:  # no cache at all: kernels, coordinate grids and pooling matrices rebuilt
            with torch.no_grad():
                model.clear_kernel_cache()
                _backend.clear_constants()
                model(x)

        def kernels_only() -> None:  # what the cache saves: the slow networks' outputs from scratch
            with torch.no_grad():
                _backend.clear_constants()
                model._compute_slow_kernels(model.param_tree())

        with torch.no_grad():
            cached_logits = model(x)
            model.clear_kernel_cache()
            same = bool(torch.equal(cached_logits, model(x)))
        t = measure_interleaved(
            {"cached": cached, "uncached": uncached, "kernels": kernels_only}, reps=spec.get("reps", 7)
        )
        un, ca, ke = t["uncached"].median, t["cached"].median, t["kernels"].median
        return {
            "B": b,
            "H": spec["H"],
            "cached": t["cached"].as_dict(),
            "uncached": t["uncached"].as_dict(),
            "kernels": t["kernels"].as_dict(),
            "speedup": un / ca,
            # Amdahl: the speed-up if a cache hit cost nothing and the rest stayed as uncached
            "bound": un / max(un - ke, 1e-12),
            "kernel_share": ke / un,
            "identical_logits": same,
            "hits": model.kernel_cache.hits,
            "misses": model.kernel_cache.misses,
        }
    import hyperzzw_core as hz

    params = R.init_params(cfg, 0)
    x_np = rng.standard_normal((b,) + cfg.input_shape)
    model = Terminator.from_params(params, cfg).eval()
    xt = torch.from_numpy(x_np)

    def torch_fwd() -> None:
        with torch.no_grad():
            model(xt)

    fns = {
        "reference": lambda: R.terminator_forward(params, x_np, cfg, check_finite=False),
        "core-numpy": lambda: hz.terminator_forward(params, x_np, cfg, check_finite=False),
        "torch-cpu": torch_fwd,
    }
    t = measure_interleaved(fns, reps=spec.get("reps", 5))
    with torch.no_grad():
        diff = float(np.max(np.abs(model(xt).numpy() - R.terminator_forward(params, x_np, cfg)[0])))
    return {
        "B": b,
        "H": spec["H"],
        **{k: v.as_dict() for k, v in t.items()},
        "ratio": t["reference"].median / t["torch-cpu"].median,
        "max_abs_logit_diff": diff,
    }


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_in_worker(json.loads(sys.argv[1]))))
