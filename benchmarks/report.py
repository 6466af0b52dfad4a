"""docs/benchmarks.md and docs/benchmarks.png from one run's results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .machine import product_peak

TARGETS = {"roofline": 0.25, "cache": 2.0, "reference": 5.0}


def _ms(t: float | None) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "–"
    return f"{t * 1e3:.1f} ms" if t < 1.0 else f"{t:.2f} s"


def _mib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:.0f} MiB"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.1f}%"


def _g(x: float) -> str:
    return f"{x / 1e9:.2f}"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _compiled_kernels(kernels: dict[str, bool] | None, status: str | None = None) -> str:
    """The compiled CPU kernels a run took (benchmarks.json before 2026-12-02 did not record them),
    and why (recorded from the twentieth session on)."""
    if kernels is None:
        return "not recorded"
    taken = ", ".join(f"{name} {'yes' if has else 'no (torch kernels)'}" for name, has in kernels.items())
    return taken if status is None else f"{taken}: {status}"


def _conv1x1_row(p: dict[str, Any]) -> list[str]:
    """The limits table's row of oneDNN's float32 1×1 convolution, where the run measured it."""
    if "torch_conv1x1_float32" not in p:
        return []
    return [
        f"| 1×1 convolution float32 (oneDNN, channels-last; the FLOPs of the matmul) | "
        f"{p['torch_conv1x1_float32'] / 1e9:.1f} GFLOP/s ({p['torch_conv1x1_float32_median'] / 1e9:.1f}) | – |"
    ]


def _machine(res: dict[str, Any]) -> list[str]:
    m, p = res["machine"], res["peaks"]
    la0, la1 = res["load_before"], res["load_after"]
    return [
        "## The machine and its limits (measured in this run)",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} ({', '.join(m['cpu_flags'])}) |",
        f"| cores | {m['logical_cpus']} logical, {m['usable_cpus']} usable |",
        f"| memory | {m['mem_gib']} GiB |",
        f"| software | Python {m['python']}, NumPy {m['numpy']}, SciPy {m['scipy']}, torch {m['torch']} "
        f"(oneDNN {'yes' if m['torch_mkldnn'] else 'no'}) |",
        f"| threads | torch {m['torch_threads']} intra-op / {m['torch_interop_threads']} inter-op; "
        f"OMP_NUM_THREADS {m['OMP_NUM_THREADS']}; NumPy BLAS {', '.join(m['numpy_blas']) or 'unknown'} |",
        f"| compiled CPU kernels | {_compiled_kernels(m.get('compiled_kernels'), m.get('compiled_kernels_status'))} |",
        f"| GPU | {'CUDA: ' + str(m['cuda_device']) if m['cuda'] else 'none (torch CUDA and CuPy skipped)'} |",
        f"| load average (1, 5, 15 min) | before: {la0[0]:.2f}, {la0[1]:.2f}, {la0[2]:.2f}; "
        f"after: {la1[0]:.2f}, {la1[1]:.2f}, {la1[2]:.2f} |",
        "",
        f"Limits, best of the repetitions (median in brackets), {p['matmul_n']}² matmul and a "
        f"{p['copy_bytes'] // 2**20} MiB copy (bytes read + written):",
        "",
        "| | torch | NumPy |",
        "|---|---|---|",
        f"| matmul float32 | {p['torch_matmul_float32'] / 1e9:.1f} GFLOP/s "
        f"({p['torch_matmul_float32_median'] / 1e9:.1f}) | "
        f"{p['numpy_matmul_float32'] / 1e9:.1f} GFLOP/s ({p['numpy_matmul_float32_median'] / 1e9:.1f}) |",
        f"| matmul float64 | {p['torch_matmul_float64'] / 1e9:.1f} GFLOP/s "
        f"({p['torch_matmul_float64_median'] / 1e9:.1f}) | "
        f"{p['numpy_matmul_float64'] / 1e9:.1f} GFLOP/s ({p['numpy_matmul_float64_median'] / 1e9:.1f}) |",
        *_conv1x1_row(p),
        f"| memory copy | {p['torch_copy'] / 1e9:.1f} GB/s ({p['torch_copy_median'] / 1e9:.1f}) | "
        f"{p['numpy_copy'] / 1e9:.1f} GB/s ({p['numpy_copy_median'] / 1e9:.1f}) |",
        "",
        "Measurements on torch are judged against torch's limits, on NumPy (reference, core) against NumPy's; "
        "torch's float32 product peak is the better of its matmul and its oneDNN 1×1 convolution "
        "(benchmarks/machine.py).",
        "",
    ]


def _headline(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    cache = res["cache"]
    cmp_ = res["compare"]
    best_cache = max(cache, key=lambda r: r["speedup"])
    lines = [
        "## Summary: the targets of issue #7, measured side by side in this run",
        "",
        "| target | measured | status |",
        "|---|---|---|",
        f"| training step, `cifar10()`, batch {h['B']}, float32, torch CPU (loss + backward) | "
        f"{_ms(h['median'])} median of {h['reps']} (min {_ms(h['min'])}), {h['images_per_s']:.1f} images/s, "
        f"peak memory +{_mib(h['peak_rss_delta'])} (peak RSS of a fresh process, reset after building the model "
        "and inputs, minus the RSS then; "
        f"{_mib(h['saved_bytes'])} saved for backward) | |",
        f"| … its fraction of the machine's limits | {h['gflops_per_s']:.1f} GFLOP/s = {_pct(h['flops_frac'])} of "
        f"the product peak; {h['gbytes_per_s']:.1f} GB/s = {_pct(h['bytes_frac'])} of copy | |",
        f"| … at ≥ 25% of its roofline bound | bound {_ms(h['roofline_s'])} ({h['bound_by']}-bound: "
        f"{_g(h['flops'])} GFLOP, {_g(h['bytes'])} GB) → **{_pct(h['roofline_frac'])}** | "
        f"{_met(h['roofline_frac'] >= TARGETS['roofline'])} |",
        "| eval forward with the caches vs without (≥ 2x); without = slow-network outputs, coordinate grids "
        "and pooling matrices rebuilt on every call | "
        + "; ".join(
            f"B={r['B']}: {_ms(r['cached']['median'])} vs {_ms(r['uncached']['median'])} = **{r['speedup']:.2f}x**"
            for r in cache
        )
        + f" | {_met(best_cache['speedup'] >= TARGETS['cache'])}"
        + (
            f" at B={best_cache['B']} only"
            if best_cache["speedup"] >= TARGETS["cache"] and not all(r["speedup"] >= TARGETS["cache"] for r in cache)
            else ""
        )
        + " |",
        "| … what the cache can save at most: the slow networks' outputs computed from scratch, their share of "
        "the uncached forward, and the speed-up if a cache hit cost nothing (Amdahl: uncached / (uncached − "
        "kernels)) | "
        + "; ".join(
            f"B={r['B']}: {_ms(r['kernels']['median'])} = {_pct(r['kernel_share'])} → at most {r['bound']:.2f}x"
            for r in cache
            if "kernels" in r
        )
        + " | |",
        f"| reference forward within 5x of torch CPU float64, ({cmp_['B']}, 3, {cmp_['H']}, {cmp_['H']}) | "
        f"reference {_ms(cmp_['reference']['median'])}, torch {_ms(cmp_['torch-cpu']['median'])}: "
        f"**{cmp_['ratio']:.2f}x** (core on NumPy {_ms(cmp_['core-numpy']['median'])}; max |Δlogit| "
        f"{cmp_['max_abs_logit_diff']:.1e}) | {_met(cmp_['ratio'] <= TARGETS['reference'])} |",
        "| growth with the input size | see the tables below and docs/benchmarks.png | |",
        "",
    ]
    return lines + _cache_note(res)


def _now_in_code(key: str) -> int | None:
    """The current ``_backend.FFT_MIN_KERNEL`` entry for a report key ``"torch-cpu/float32"`` etc."""
    from hyperzzw_core import _backend

    backend, _, dtype = key.partition("/")
    return _backend.FFT_MIN_KERNEL.get(("torch-cpu" if backend.startswith("torch") else backend, dtype))


def _cache_note(res: dict[str, Any]) -> list[str]:
    """Why the cache speed-up is what it is: the slow networks' share, measured and modelled."""
    rows = [r for r in res["cache"] if "kernels" in r]
    if not rows:
        return []
    from hyperzzw_core.reference import cifar10

    from .costs import network_costs

    r0 = min(rows, key=lambda r: r["B"])
    t = network_costs(cifar10().replace(input_shape=(3, r0["H"], r0["H"])), r0["B"], 4, train=False)
    flops = sum(c.flops for c in t.fwd.values())
    nbytes = sum(c.bytes for c in t.fwd.values())
    met = all(r["speedup"] >= TARGETS["cache"] for r in rows)
    return [
        f"**The kernel cache.** A cache hit skips exactly the slow networks (every block's K_g, K_c, K_cc, K_ss "
        f"and MAGNet_L's input-independent prefix) and the rebuilding of grids and pooling matrices. Measured "
        f"above, that work is {_pct(r0['kernel_share'])} of the uncached eval forward at B={r0['B']} and less "
        f"at larger batches (its cost does not grow with B, the rest does), so no cache, however cheap its "
        f"hit, can make this forward more than {r0['bound']:.2f}x faster at B={r0['B']}. The cost model agrees: "
        f"at B={r0['B']} the slow networks are {_pct(t.fwd['slow'].flops / flops)} of the forward's FLOPs and "
        f"{_pct(t.fwd['slow'].bytes / nbytes)} of its bytes; the point-wise linears of the fast path (RGUs, "
        f"mixers, bottleneck: {_pct(t.fwd['gemm'].flops / flops)} of the FLOPs) carry the rest. "
        + (
            "The 2x target is met."
            if met
            else "**The 2x target is therefore out of reach for `cifar10()` on this machine**: it would need the "
            "slow networks to be at least half of the uncached forward. What the cache does deliver is the "
            "removal of that work: the kernels cost one dictionary lookup per forward instead of the "
            f"{_ms(r0['kernels']['median'])} above."
        ),
        "",
    ]


def _cost_section(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    fc = res.get("flop_counter")
    lines = [
        "## The cost model",
        "",
        "FLOPs and bytes are counted analytically, operator by operator, by `benchmarks/costs.py`, "
        "walking the SFNE block exactly as `hyperzzw_core._block._forward` does:",
        "",
        "* matrix products (m×k)·(k×n): 2·m·n·k FLOPs; a point-wise linear (B, I, N) → (B, O, N): 2·B·O·I·N "
        "(+ B·O·N for the bias); the global product Ẑ @ Y: 2·B·C·H·W²;",
        "* depth-wise k×k convolution: 2·k²·B·C·H·W;",
        "* element-wise: a few FLOPs per element (1 for add/mul, 4 sigmoid, 5 SiLU, 8 GELU/sin); a "
        "standardisation 5 per element forward, 8 backward; a mean 1 per element;",
        "* bytes: each operator reads each input once and writes its output once, in the dtype's item size "
        "(parameters included; concatenation and tiling move bytes, views are free). This is the traffic of an "
        "unfused, operator-by-operator execution: fusion can beat it;",
        "* backward: a product-type operator costs 2× its forward FLOPs and reads its output gradient and saved "
        "inputs, writing the input gradients; element-wise operators read the output gradient and saved inputs "
        "and write one gradient per input; sums pass gradients through;",
        "* the roofline bound of a step is max(FLOPs / product peak, bytes / copy bandwidth), both peaks measured "
        "in the same run (float32 or float64 as the step).",
        "",
        f"Training step of the summary (B={h['B']}, H={h['H']}, float32), per category "
        "(GFLOP / GB; forward | backward):",
        "",
        "| category | fwd GFLOP | fwd GB | bwd GFLOP | bwd GB |",
        "|---|---|---|---|---|",
    ]
    tot = [0.0, 0.0, 0.0, 0.0]
    for cat, v in h["breakdown"].items():
        vals = [v["fwd_flops"], v["fwd_bytes"], v["bwd_flops"], v["bwd_bytes"]]
        tot = [a + b for a, b in zip(tot, vals, strict=True)]
        lines.append(f"| {cat} | " + " | ".join(_g(x) for x in vals) + " |")
    lines.append("| **total** | " + " | ".join(f"**{_g(x)}**" for x in tot) + " |")
    lines += [
        "",
        "Categories: gemm = point-wise linears (RGU, mixers, bottleneck, head); global = Ẑ @ Y; "
        "conv = depth-wise; norm = IS/BS/G-IBS; slow = the slow networks (MAGNets, pooling of "
        "MAGNet_L's context); copy = concatenation and tiling.",
        "",
    ]
    if fc:
        lines += [
            f"Check against torch's `FlopCounterMode` on a B={fc['B']}, H={fc['H']} training step: forward "
            f"batched products and convolutions {_g(fc['counter_fwd'])} GFLOP counted vs "
            f"{_g(fc['model_fwd'])} modelled (gemm + global + conv; "
            f"ratio {fc['counter_fwd'] / fc['model_fwd']:.3f}); "
            f"backward batched products {_g(fc['counter_bwd'])} vs {_g(fc['model_bwd'])} (ratio "
            f"{fc['counter_bwd'] / fc['model_bwd']:.3f}). The counter's remaining `mm` "
            f"({_g(fc['counter_mm'])} GFLOP) are the slow networks and the head ({_g(fc['model_slow'])} GFLOP "
            "in the model's 'slow' category, which also counts their element-wise work); its "
            "`convolution_backward` formula ignores `groups` (a C-fold over-count for depth-wise), so it is "
            "left out. The model adds the bias additions, which the counter does not count.",
            "",
        ]
    return lines


def _limits(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    prof = h.get("profile")
    if not prof:
        return []
    p = res["peaks"]
    bd = h["breakdown"]
    gemm_flops = sum(bd[c]["fwd_flops"] + bd[c]["bwd_flops"] for c in ("gemm", "global"))
    other_bytes = sum(bd[c]["fwd_bytes"] + bd[c]["bwd_bytes"] for c in bd if c not in ("gemm", "global"))
    t_gemm = prof["groups"]["gemm (linears, global product)"]
    scale = h["median"] / prof["total_self_s"] if prof["total_self_s"] else 1.0
    lines = [
        "## What limits the training step",
        "",
        f"One extra step of the summary's measurement under torch's profiler (self CPU time per kind of "
        f"operator; the profiled step took {prof['total_self_s']:.2f} s of operator time against the "
        f"{_ms(h['median'])} median wall time):",
        "",
        "| kind | time | share |",
        "|---|---|---|",
    ]
    for k, v in sorted(prof["groups"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {_ms(v)} | {_pct(v / prof['total_self_s'])} |")
    lines += [
        "",
        f"The matrix products ({_g(gemm_flops)} GFLOP modelled) ran at "
        f"{gemm_flops / max(t_gemm * scale, 1e-9) / 1e9:.0f} GFLOP/s, "
        f"{_pct(gemm_flops / max(t_gemm * scale, 1e-9) / product_peak(p))} of the large-product peak "
        "(they are many medium-sized batched GEMMs: K = C for the RGU and mixers, and the weight gradients "
        "of the expanded weights are B separate GEMMs summed afterwards). Everything else is memory-bound: "
        "the modelled traffic outside the products "
        f"({_g(other_bytes)} GB) "
        "would take "
        f"{_ms(other_bytes / p['torch_copy'])}"
        " at the copy bandwidth; on two cores the element-wise kernels, the fresh allocations they page-fault "
        "in and the copies (concatenation, layout changes) reach a fraction of it.",
        "",
    ]
    return lines


def _growth(res: dict[str, Any]) -> list[str]:
    rows = res["growth"] + [res["headline"]]
    lines = [
        "## Growth with the input size and the batch (whole network)",
        "",
        "Each row is a fresh process (so that the peak memory is this measurement's alone): median of the "
        "timed calls after one untimed first call. `peak +` is the peak RSS during the calls (VmHWM, reset "
        "once the model and inputs are built) minus the RSS at that point; `saved` is what autograd saves "
        "for backward.",
        "",
        "| sweep | backend | dtype | pass | B | H = W | median | model GFLOP | model GB | GFLOP/s | "
        "% matmul | % copy | % roofline | peak + | saved |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.get("sweep", ""), r["backend"], r["kind"], r["B"], r["H"])):
        lines.append(
            f"| {r.get('sweep', '')} | {r['backend']} | {r['dtype']} | {r['kind']} | {r['B']} | {r['H']} | "
            f"{_ms(r['median'])} | {_g(r['flops'])} | {_g(r['bytes'])} | {r['gflops_per_s']:.1f} | "
            f"{_pct(r['flops_frac'])} | {_pct(r['bytes_frac'])} | {_pct(r['roofline_frac'])} | "
            f"{_mib(r['peak_rss_delta'])} | {_mib(r.get('saved_bytes'))} |"
        )
    lines += [
        "",
        "The global product costs O(H·W²) per channel (spec §5 Q13): from H = 64 on it grows "
        "faster than the rest (8x per doubling of H against 4x).",
        "",
    ]
    return lines


def _conv(res: dict[str, Any]) -> list[str]:
    cv = res["conv"]
    lines = [
        "## Depth-wise convolution: direct or FFT (the measurement that sets the threshold)",
        "",
        f"Interleaved medians, B={cv['rows'][0]['B']}, C={cv['rows'][0]['C']}; torch: forward + backward "
        "(direct = `F.conv2d(groups=C)`, float32 through oneDNN in channels-last layout); NumPy: forward "
        "(direct = the reference's sliding-window einsum). Cells: direct / FFT in ms; **bold** where the FFT "
        "wins.",
        "",
    ]
    for backend in ("torch-cpu", "numpy"):
        for dtype in ("float32", "float64"):
            sel = [r for r in cv["rows"] if r["backend"] == backend and r["dtype"] == dtype]
            if not sel:
                continue
            ks = sorted({r["k"] for r in sel})
            lines += [
                f"{backend}, {dtype}:",
                "",
                "| H \\ k | " + " | ".join(str(k) for k in ks) + " |",
                "|---|" + "---|" * len(ks),
            ]
            for h in sorted({r["H"] for r in sel}):
                cells = []
                for k in ks:
                    r = next((r for r in sel if r["H"] == h and r["k"] == k), None)
                    if r is None:
                        cells.append("")
                        continue
                    txt = f"{r['direct'] * 1e3:.2f} / {r['fft'] * 1e3:.2f}"
                    cells.append(f"**{txt}**" if r["fft"] < r["direct"] else txt)
                lines.append(f"| {h} | " + " | ".join(cells) + " |")
            d = cv["derived"][f"{backend}/{dtype}"]
            now = _now_in_code(f"{backend}/{dtype}")
            lines += [
                "",
                f"Smallest k from which the FFT wins at every H ≥ {cv['min_spatial']} (and every larger k): "
                f"**{d['measured_min_k'] if d['measured_min_k'] is not None else 'none measured'}**; "
                f"in `_backend.FFT_MIN_KERNEL` when measured: {d['in_code']}"
                + (f"; now: {now} (set from this measurement)." if now not in (None, d["in_code"]) else "."),
                "",
            ]
    lines += [
        "The rule in `hyperzzw_core._backend.depthwise_method`: FFT when the kernel is at least "
        "`FFT_MIN_KERNEL[(backend, dtype)]` and the input's smallest spatial extent at least "
        f"`FFT_MIN_SPATIAL` = {cv['min_spatial']}; direct otherwise, on GPUs and inside torch.compile "
        "traces (Inductor has no complex kernels).",
        "",
    ]
    return lines


def _ops(res: dict[str, Any]) -> list[str]:
    rows = res["ops"]
    lines = [
        "## Per operator",
        "",
        "Median per call; `%roof` = the roofline bound of the operator's modelled FLOPs and bytes over the "
        "measured time. Forward + backward: reference = forward + its hand-written VJP, torch = autograd. "
        "The core on NumPy has no backward. `–`: not run (slower than the cut-off at a smaller size). "
        "array-api-strict is a conformance backend (a NumPy wrapper that checks every call), so it is "
        "tested, not timed; torch CUDA and CuPy join the tables where a GPU is usable.",
        "",
    ]
    for sweep, title, key in (
        ("H", "input size H = W (B = {B}, C = {C})", "H"),
        ("C", "channels C (B = {B}, H = {H})", "C"),
        ("B", "batch B (C = {C}, H = {H})", "B"),
    ):
        sel = [r for r in rows if r["sweep"] == sweep]
        if not sel:
            continue
        r0 = sel[0]
        vals = sorted({r[key] for r in sel})
        lines += [
            f"### Sweep over {title.format(**r0)}",
            "",
            "| operator | backend | dtype | pass | " + " | ".join(f"{key}={v}" for v in vals) + " | %roof (largest) |",
            "|---|---|---|---|" + "---|" * (len(vals) + 1),
        ]
        groups: dict[tuple, list[dict]] = {}
        for r in sel:
            groups.setdefault((r["op"], r["backend"], r["dtype"], r["mode"]), []).append(r)
        for (op, backend, dtype, mode), rs in groups.items():
            by = {r[key]: r for r in rs}
            cells = [_ms(by[v].get("median")) if v in by else "" for v in vals]
            done = [r for r in rs if "median" in r]
            last = max(done, key=lambda r: r[key]) if done else None
            lines.append(
                f"| {op} | {backend} | {dtype} | {mode} | "
                + " | ".join(cells)
                + " | "
                + (_pct(last["roofline_frac"]) if last else "–")
                + " |"
            )
        lines.append("")
    return lines


def _compile(res: dict[str, Any]) -> list[str]:
    c = res.get("compile")
    if not c:
        return [
            "## torch.compile",
            "",
            "Not measured in this run (`python -m benchmarks compile`: the first Inductor compilation of the "
            "network takes minutes on this machine).",
            "",
        ]
    lines = [
        "## torch.compile (Inductor) against eager",
        "",
        f"Measured by `python -m benchmarks compile` ({c['date']}, load {c['load'][0]:.2f}); each row a fresh "
        "process; first call = compilation (or warm-up for eager).",
        "",
        "| pass | B | eager median | compiled median | speed-up | first call (compile) |",
        "|---|---|---|---|---|---|",
    ]
    for r in c["rows"]:
        lines.append(
            f"| {r['kind']} | {r['B']} | {_ms(r['eager'])} | {_ms(r['compiled'])} | "
            f"{r['eager'] / r['compiled']:.2f}x | {_ms(r['first_call'])} |"
        )
    from .cli import compile_verdict

    lines += ["", compile_verdict(c["rows"]), ""]
    return lines


def render(res: dict[str, Any], out_dir: Path, intro: str) -> Path:
    """Write benchmarks.md (and the plot) into ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmarks",
        "",
        intro,
        "",
        f"Run: `{res['command']}`, {res['date']}, {res['duration_s']:.0f} s in all"
        + (" (**quick mode**: small sizes, smoke test only)" if res["quick"] else "")
        + ".",
        "",
    ]
    ab = out_dir / "ab.md"  # the latest `bench ab --out <this folder>`, kept across re-renders
    lines += ab.read_text(encoding="utf-8").splitlines() + [""] if ab.is_file() else []
    lines += (
        _headline(res) + _machine(res) + _cost_section(res) + _limits(res) + _growth(res) + _conv(res) + _compile(res)
    )
    lines += (Path(__file__).with_name("fast_paths.md")).read_text(encoding="utf-8").splitlines() + [""]
    lines += _ops(res)
    path = out_dir / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(res, out_dir / "benchmarks.png")
    return path


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    # (1) per-op time vs H, torch-cpu float32 fwd+bwd
    for ax, (backend, dtype, mode) in zip(
        axes[0, :2], (("torch-cpu", "float32", "fwd+bwd"), ("reference", "float64", "fwd+bwd")), strict=True
    ):
        sel = [
            r
            for r in res["ops"]
            if r["sweep"] == "H"
            and r["backend"] == backend
            and r["dtype"] == dtype
            and r["mode"] == mode
            and "median" in r
        ]
        for j, op in enumerate(dict.fromkeys(r["op"] for r in sel)):
            rs = sorted((r for r in sel if r["op"] == op), key=lambda r: r["H"])
            # ten colours in the cycle: the second ten get another line style and marker
            ax.plot(
                [r["H"] for r in rs],
                [r["median"] * 1e3 for r in rs],
                marker="os"[j // 10 % 2],
                ls=("-", "--")[j // 10 % 2],
                label=op,
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="H = W",
            ylabel="ms per call",
            title=f"operators, {backend} {dtype}, {mode}",
        )
        ax.set_xticks([8, 16, 32, 64, 128], ["8", "16", "32", "64", "128"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    # (2) network time vs H
    ax = axes[0, 2]
    net = [r for r in res["growth"] if r.get("sweep") == "H"]
    for key in dict.fromkeys((r["backend"], r["dtype"], r["kind"]) for r in net):
        rs = sorted((r for r in net if (r["backend"], r["dtype"], r["kind"]) == key), key=lambda r: r["H"])
        ax.plot([r["H"] for r in rs], [r["median"] for r in rs], marker="o", label=" ".join(key))
    ax.set(xscale="log", yscale="log", xlabel="H = W", ylabel="s per call", title="whole network, B = 2")
    ax.set_xticks([8, 16, 32, 64, 128], ["8", "16", "32", "64", "128"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    # (3) network memory vs H
    ax = axes[1, 0]
    for kind in ("forward", "train"):
        rs = sorted((r for r in net if r["backend"] == "torch-cpu" and r["kind"] == kind), key=lambda r: r["H"])
        ax.plot(
            [r["H"] for r in rs],
            [max(r["peak_rss_delta"], 1) / 2**20 for r in rs],
            marker="o",
            label=f"torch float32 {kind}: peak RSS increase",
        )
        if kind == "train":
            ax.plot(
                [r["H"] for r in rs],
                [r["saved_bytes"] / 2**20 for r in rs],
                marker="s",
                ls="--",
                label="torch float32 train: saved for backward",
            )
    ax.set(xscale="log", yscale="log", xlabel="H = W", ylabel="MiB", title="whole network memory, B = 2")
    ax.set_xticks([8, 16, 32, 64, 128], ["8", "16", "32", "64", "128"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    # (4) batch sweep: images/s
    ax = axes[1, 1]
    bs = [r for r in res["growth"] + [res["headline"]] if r.get("sweep") == "B"]
    for kind in ("forward", "train"):
        rs = sorted((r for r in bs if r["kind"] == kind), key=lambda r: r["B"])
        ax.plot(
            [r["B"] for r in rs],
            [r["images_per_s"] for r in rs],
            marker="o",
            label=f"torch float32 {'eval forward (cached kernels)' if kind == 'forward' else kind}",
        )
    for r in res["cache"]:
        ax.plot([r["B"]], [r["B"] / r["cached"]["median"]], marker="*", color="k", ms=10)
    ax.set(
        xscale="log",
        xlabel="batch",
        ylabel="images / s",
        title="throughput vs batch (★: eval cached, interleaved with uncached)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    # (5) roofline fractions
    ax = axes[1, 2]
    pts = [r for r in res["growth"] + [res["headline"]] if r["backend"] == "torch-cpu"]
    for kind, mk in (("forward", "o"), ("train", "s")):
        rs = [r for r in pts if r["kind"] == kind]
        ax.scatter(
            [r["flops"] / r["bytes"] for r in rs],
            [r["gflops_per_s"] for r in rs],
            marker=mk,
            label=f"torch float32 {kind}",
        )
    p = res["peaks"]
    pf, pb = product_peak(p) / 1e9, p["torch_copy"] / 1e9
    import numpy as np

    xx = np.logspace(0, np.log10(3000), 100)
    ax.plot(xx, np.minimum(pf, pb * xx), "k-", lw=1, label="roofline (measured peaks)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="modelled FLOP / byte",
        ylabel="GFLOP/s achieved",
        title="whole network against the roofline",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"hyperzzw benchmarks — {res['machine']['cpu']}, {res['machine']['usable_cpus']} cores, "
        f"torch {res['machine']['torch']} ({res['date']})",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
