"""One whole-network measurement in a fresh interpreter (``python -m benchmarks._worker JSON``).

A fresh process makes the peak resident set size (``ru_maxrss``) a property of this measurement
alone: the worker records the RSS after building the model and the inputs (the baseline) and the
peak after the timed calls; the difference is the memory the calls themselves needed. It prints
one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def _rss_now() -> int:
    with open("/proc/self/statm", encoding="utf-8") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is impossible.

    Without it the peak would include transients from before the baseline (imports, parameter
    initialisation), which made every row of a sweep report the same import-time peak.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss() -> int:
    """Peak RSS in bytes since the last :func:`_reset_peak` (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


#: aten operators → what they are, for the profile of the headline step
_KINDS = {
    "gemm (linears, global product)": ("bmm", "baddbmm", "mm", "addmm", "matmul"),
    "depth-wise convolution": (
        "convolution",
        "mkldnn_convolution",
        "convolution_backward",
        "fft_r2c",
        "fft_c2r",
        "_fft_r2c",
        "_fft_c2r",
    ),
    "copies (cat, layout, reshape)": ("copy_", "cat", "stack", "clone", "contiguous"),
    "standardisation kernels": ("native_batch_norm", "native_batch_norm_backward", "batch_norm"),
    "transcendental (gelu, sigmoid, sin)": (
        "gelu",
        "gelu_backward",
        "silu",
        "silu_backward",
        "sigmoid",
        "sigmoid_backward",
        "sin",
        "cos",
        "erf",
        "exp",
        "rsqrt",
    ),
    "element-wise and reductions": (
        "mul",
        "add",
        "sub",
        "div",
        "mul_",
        "add_",
        "sub_",
        "div_",
        "sum",
        "mean",
        "neg",
        "addcmul",
        "where",
        "fill_",
        "zero_",
        "sqrt",
        "pow",
    ),
}


def _profile(torch: Any, fn: Any) -> dict[str, Any]:
    """Self CPU time of one call, grouped by kind of operator (torch profiler)."""
    with torch.profiler.profile() as prof:
        fn()
    total = 0.0
    groups: dict[str, float] = {k: 0.0 for k in _KINDS}
    groups["other"] = 0.0
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total / 1e6
        total += t
        name = ev.key.split("::")[-1]
        for k, names in _KINDS.items():
            if ev.key.startswith("aten::") and name in names:
                groups[k] += t
                break
        else:
            groups["other"] += t
    return {"total_self_s": total, "groups": groups}


def _eager_floor(torch: Any, cfg: Any, kind: str, model: Any, x: Any, fn: Any, device: str) -> dict[str, Any]:
    """:func:`benchmarks.floor.eager_floor` of ``fn`` (a call on ``x``); its smaller calls are the
    same kind of call on a model of ``cfg`` at another input size, in ``model``'s mode and dtype."""
    from hyperzzw_core.adapters.torch import Terminator

    from .floor import eager_floor

    dtype = model.head.weight.dtype

    def make_small(batch: int, shape: tuple[int, ...]) -> Any:
        small = Terminator(cfg.replace(input_shape=(cfg.input_shape[0], *shape)), 0, device=device, dtype=dtype)
        small.train(model.training)
        xs = torch.zeros((batch, cfg.input_shape[0], *shape), device=device, dtype=dtype).normal_()
        labels = torch.zeros((batch,), dtype=torch.int64, device=device)

        def step() -> None:
            small.zero_grad(set_to_none=True)
            small.loss(xs, labels).backward()

        def forward() -> None:
            with torch.no_grad():
                small(xs)

        return step if kind == "train" else forward

    return eager_floor(torch, fn, make_small, x.shape[0], tuple(cfg.input_shape[1:]))


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from hyperzzw_core import reference as R

    from .timing import measure

    if spec["kind"] in ("cache", "compare"):
        from .network import run_in_worker

        return run_in_worker(spec)
    cfg = R.preset(spec["config"]) if "config" in spec else R.cifar10()
    if spec.get("H"):
        cfg = cfg.replace(input_shape=(cfg.input_shape[0], spec["H"], spec["H"]))
    b, dtype, backend, kind = spec["B"], spec["dtype"], spec["backend"], spec["kind"]
    reps, budget = spec.get("reps", 5), spec.get("budget", 30.0)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((b,) + cfg.input_shape).astype(dtype)
    labels_np = rng.integers(0, cfg.num_classes, size=b)
    out: dict[str, Any] = {"spec": spec}
    if backend == "torch-cpu" or backend == "torch-cuda":
        import torch

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        from hyperzzw_core.adapters.torch import Terminator

        device = "cuda" if backend == "torch-cuda" else "cpu"
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        model = Terminator(cfg, 0, device=device, dtype=getattr(torch, dtype))
        x = torch.from_numpy(x_np).to(device)
        labels = torch.from_numpy(labels_np).to(device)
        if spec.get("compile"):
            model.compile()
        if kind == "train":
            model.train()

            def fn() -> None:
                model.zero_grad(set_to_none=True)
                model.loss(x, labels).backward()
                sync()
        else:
            model.eval()
            cached = spec.get("cached", True)

            def fn() -> None:
                with torch.no_grad():
                    if not cached:
                        model.clear_kernel_cache()
                    model(x)
                sync()

        baseline = _rss_now()
        out["peak_reset"] = _reset_peak()
        t0 = time.perf_counter()
        fn()  # first call (compiles when asked); not timed with the others
        out["first_call"] = time.perf_counter() - t0
        t = measure(fn, reps=reps, warmup=0, budget=budget)
        # the calls' peak, before the measurements below allocate on their own (the eager floor's
        # replay of every kernel on fresh tensors grew the kept heap by about 900 MiB at B = 32)
        peak = _maxrss()
        if kind == "train":
            from .ops import saved_tensor_bytes

            model.zero_grad(set_to_none=True)
            out["saved_bytes"] = saved_tensor_bytes(lambda: model.loss(x, labels))
        if spec.get("profile"):
            out["profile"] = _profile(torch, fn)
        if spec.get("floor"):
            out["floor"] = _eager_floor(torch, cfg, kind, model, x, fn, device)
        out["threads"] = torch.get_num_threads()
        out["compiled"] = bool(getattr(model, "is_compiled", False))
    else:
        import hyperzzw_core as hz

        params = R.init_params(cfg, 0, dtype=np.dtype(dtype))
        if backend == "reference":
            if kind == "train":

                def fn() -> None:
                    R.terminator_loss_and_grad(params, x_np, labels_np, cfg, rng=np.random.default_rng(0))
            else:

                def fn() -> None:
                    R.terminator_forward(params, x_np, cfg, check_finite=False)
        elif backend == "core-numpy" and kind == "forward":

            def fn() -> None:
                hz.terminator_forward(params, x_np, cfg, check_finite=False)
        else:
            raise ValueError(f"no {kind} on {backend}")
        baseline = _rss_now()
        out["peak_reset"] = _reset_peak()
        t0 = time.perf_counter()
        fn()
        out["first_call"] = time.perf_counter() - t0
        t = measure(fn, reps=reps, warmup=0, budget=budget)
        peak = _maxrss()
    out.update(
        median=t.median,
        min=t.min,
        max=t.max,
        reps=t.reps,
        times=t.times,
        peak_rss=peak,
        baseline_rss=baseline,
        peak_delta=peak - baseline,
    )
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
