"""Side-by-side A/B comparison of this checkout against a git revision, interleaved in one run.

``hyperzzw bench ab --rev REV`` (or ``python -m benchmarks ab --rev REV``) exports ``REV`` with
``git archive``, installs it without dependencies into a private folder (``pip install --target``,
the build backend of this environment, no isolation) and then times the same whole-network
measurements on both sides, alternating fresh worker processes: A, B, A, B, … One process per
side and round, so that a change of the machine's load during the run hits both sides alike and
each process's peak memory belongs to one measurement.

Side A is the revision, side B the code this command runs from (the checkout or the installed
package). Each worker reports the file of the ``hyperzzw_core`` it imported; the comparison refuses
to report if a side ran the other side's code.

The measurements are those of :mod:`benchmarks._worker` (``cifar10()`` by default): the training
step (forward + backward) and the eval forward, with their medians, minima and peak memory. The
ratio B/A below 1 means this checkout is faster (or smaller).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .floor import CATEGORIES
from .timing import load_average

#: (kind, batch) of the default comparison: the training step and the eval forward of issue 16
DEFAULT_CASES = (("train", 32), ("forward", 8), ("forward", 1))
QUICK_CASES = (("train", 2), ("forward", 1))
#: the commit before issue 16's work: its targets are ratios to this revision's figures
ISSUE_16_BASELINE = "1a7ecc5b958fca43ce0e88f779a14a4664567453"
#: issue 16's targets, for the ``cifar10()`` cases: (kind, batch) → the largest B/A each allows, for
#: the time and (training) the memory
ISSUE_16_TARGETS: dict[tuple[str, int], dict[str, float]] = {
    ("train", 32): {"time": 0.55, "memory": 0.5},
    ("forward", 8): {"time": 0.65},
    ("forward", 1): {"time": 0.60},
}


class ABError(RuntimeError):
    """A side could not be built or measured; the message says which and why."""


def parse_cases(text: str) -> tuple[tuple[str, int], ...]:
    """``"train:64,forward:8"`` → ((kind, batch), …): kinds ``train`` (loss + backward) and
    ``forward`` (eval, no gradients), batches positive; :class:`ABError` naming the bad item."""
    cases = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        kind, _, batch = item.partition(":")
        if kind not in ("train", "forward") or not batch.isdigit() or int(batch) < 1:
            raise ABError(
                f"bench ab: --cases item {item!r}: expected KIND:BATCH with KIND train or forward and a "
                "positive BATCH, e.g. train:64,forward:8"
            )
        cases.append((kind, int(batch)))
    if not cases:
        raise ABError(f"bench ab: --cases {text!r} names no case (e.g. train:64,forward:8)")
    return tuple(cases)


def repo_root(start: Path) -> Path:
    """The git work tree holding ``start``; :class:`ABError` if there is none."""
    proc = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ABError(f"bench ab: {start} is not inside a git checkout (needed to export --rev): {proc.stderr.strip()}")
    return Path(proc.stdout.strip())


def resolve(root: Path, rev: str) -> str:
    """The full commit id of ``rev``; :class:`ABError` naming ``rev`` if git does not know it."""
    proc = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ABError(f"bench ab: --rev {rev!r} is not a commit of {root}")
    return proc.stdout.strip()


def install_revision(root: Path, commit: str, dest: Path) -> Path:
    """Export ``commit`` of ``root`` and install it into ``dest/site``; return that folder."""
    src, site = dest / "src", dest / "site"
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", commit], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise ABError(f"bench ab: git archive {commit} failed: {archive.stderr.decode(errors='replace')[-500:]}")
    tar_path = dest / "src.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(src, filter="data")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ABError(f"bench ab: installing {commit[:12]} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return site


HEAP_AS_CLI = """
try:
    from hyperzzw_core.train.memory import keep_freed_memory
except ImportError:
    heap = "C library defaults (this side's hyperzzw train sets none)"
else:
    heap = keep_freed_memory() or "C library defaults (not glibc)"
"""
"""With ``as_cli``: each worker first applies the process setting of its own side's
``hyperzzw train`` (``train.memory.keep_freed_memory``, where that side has it) and reports it."""


LIVE_TUNABLE = "glibc.malloc.mmap_threshold=65536"
"""The live-peak processes' glibc setting: every block of 64 KiB or more is mapped on allocation
and returned to the system when freed, so that the peak RSS is the memory the calls hold at once
(to a page), not what the allocator keeps for reuse. Every tensor of a measurement is this large."""


def live_peaks_supported() -> bool:
    """Whether this machine's C library reads :data:`LIVE_TUNABLE` (glibc's tunables, 2.26 and later)."""
    name, version = platform.libc_ver()
    return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 26)


def _run(
    spec: dict[str, Any], site: Path | None, timeout: float, as_cli: bool = False, live: bool = False
) -> dict[str, Any]:
    """One fresh worker process; ``site`` first on ``sys.path`` (side A) or this environment (side B).
    ``as_cli``: the worker runs under the heap setting its side's ``hyperzzw train`` applies
    (:data:`HEAP_AS_CLI`); its result's ``heap`` says which. ``live``: under :data:`LIVE_TUNABLE`
    instead (never with ``as_cli``, whose setting would override it)."""
    if live and as_cli:
        raise ValueError("a live-peak process runs under LIVE_TUNABLE, not under a side's hyperzzw train setting")
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    heap = "C library defaults"
    if live:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), LIVE_TUNABLE]))
        heap = f"blocks of 64 KiB or more mapped and returned ({LIVE_TUNABLE})"
    code = (HEAP_AS_CLI if as_cli else f"heap = {heap!r}\n") + (
        "import json, sys, hyperzzw_core; from hyperzzw_core.benchmarks._worker import main; "
        "out = main(json.loads(sys.argv[1])); out['core_file'] = hyperzzw_core.__file__; out['heap'] = heap; "
        "print(json.dumps(out))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        side = "A (the revision)" if site is not None else "B (this checkout)"
        raise ABError(f"bench ab: side {side} failed on {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(
    cases: tuple[tuple[str, int], ...],
    site: Path,
    *,
    rounds: int,
    reps: int,
    config: str,
    log: Callable[[str], None],
    timeout: float = 3000.0,
    as_cli: bool = False,
    live: bool | None = None,
    compile_b: bool = False,
) -> list[dict[str, Any]]:
    """Interleave A (the revision at ``site``) and B (this code) for every case; one row per case.
    ``as_cli``: every worker under its side's ``hyperzzw train`` heap setting (see :func:`_run`).
    ``live`` (default: where :func:`live_peaks_supported`): after the rounds, one more process per
    side and case, one timed call, under :data:`LIVE_TUNABLE`; its peak is the side's ``live_peak``.
    ``compile_b``: side B's workers run under ``Terminator.compile()`` (the first call, which
    compiles, is untimed; its seconds are B's ``first_call``), side A as the revision runs by default.
    Without it, every process of side B measures its eager floor after its timed calls
    (:mod:`benchmarks.floor`; see :func:`summarize`)."""
    live = live_peaks_supported() if live is None else live
    rows = []
    for kind, b in cases:
        spec = {
            "backend": "torch-cpu",
            "dtype": "float32",
            "kind": kind,
            "B": b,
            "reps": reps,
            "budget": 1e9,
            "config": config,
        }
        specs = {"A": spec, "B": dict(spec, compile=True) if compile_b else spec}
        sites = {"A": site, "B": None}  # None: this environment
        got: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for r in range(rounds):
            for side in ("A", "B"):
                floor = side == "B" and not compile_b
                res = _run(dict(specs[side], floor=True) if floor else specs[side], sites[side], timeout, as_cli)
                inside = Path(res["core_file"]).resolve().is_relative_to(site.resolve())
                if inside != (side == "A"):
                    raise ABError(f"bench ab: side {side} imported {res['core_file']}, the other side's code")
                if side == "B" and compile_b and not res.get("compiled"):
                    raise ABError(f"bench ab: side B did not run compiled on {spec} (Terminator.compile fell back)")
                got[side].append(res)
            log(
                f"  {kind} B={b} round {r + 1}/{rounds}: A {got['A'][-1]['median']:.4f} s, "
                f"B {got['B'][-1]['median']:.4f} s"
            )
        row = summarize(kind, b, config, got)
        if live:
            for side in ("A", "B"):
                res = _run(dict(specs[side], reps=1), sites[side], timeout, live=True)
                row[side]["live_peak"] = res["peak_delta"]
            row["live_ratio"] = row["B"]["live_peak"] / max(row["A"]["live_peak"], 1)
            log(
                f"  {kind} B={b} live peak: A {row['A']['live_peak'] / 2**20:.0f} MiB, "
                f"B {row['B']['live_peak'] / 2**20:.0f} MiB"
            )
        rows.append(row)
    return rows


def summarize(kind: str, batch: int, config: str, got: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One case's row from its rounds (``got[side][r]``: a worker's ``times``, ``median``,
    ``peak_delta`` and ``core_file``).

    ``time_ratio`` pools each side's calls (median B / median A). ``round_ratios`` pairs the two
    processes of each round (B_r / A_r, their medians), which ran one after the other: a change of
    the machine's load between rounds moves both, so their median (``paired_ratio``) and range
    are the comparison's estimate and its spread where the pooled medians are skewed by a slow
    round on one side.

    Where side B's processes measured their eager floor: ``B["floor_rounds"]``, each round's floor
    (seconds, None without a call floor), and ``B["floor"]``, the whole measurement of the round
    whose floor is the median (the lower one of an even count); ``floor_over_a``, each round's
    floor over the median of A's process in the same round (None without a call floor), the floor's
    counterpart of ``round_ratios``.
    """
    row: dict[str, Any] = {"kind": kind, "batch": batch, "config": config}
    for side in ("A", "B"):
        times = [t for res in got[side] for t in res["times"]]
        row[side] = {
            "median": statistics.median(times),
            "min": min(times),
            "n": len(times),
            "peak_delta": max(res["peak_delta"] for res in got[side]),
            "core_file": got[side][0]["core_file"],
            "compiled": bool(got[side][0].get("compiled", False)),
            "first_call": statistics.median(res.get("first_call", 0.0) for res in got[side]),
            "heap": got[side][0].get("heap", "C library defaults"),
        }
    floors = [res["floor"] for res in got["B"] if "floor" in res]
    if floors:
        row["B"]["floor_rounds"] = [f["seconds"] for f in floors]
        known = sorted((f for f in floors if f["seconds"] is not None), key=lambda f: f["seconds"])
        row["B"]["floor"] = known[(len(known) - 1) // 2] if known else floors[-1]
        row["floor_over_a"] = [
            None if "floor" not in b or b["floor"]["seconds"] is None else b["floor"]["seconds"] / a["median"]
            for a, b in zip(got["A"], got["B"], strict=True)
        ]
    row["time_ratio"] = row["B"]["median"] / row["A"]["median"]
    row["round_ratios"] = [b["median"] / a["median"] for a, b in zip(got["A"], got["B"], strict=True)]
    row["paired_ratio"] = statistics.median(row["round_ratios"])
    row["peak_ratio"] = row["B"]["peak_delta"] / max(row["A"]["peak_delta"], 1)
    return row


def add_bounds(rows: list[dict[str, Any]], pk: dict[str, Any]) -> None:
    """Each row's roofline bound (benchmarks/costs.py's model of this checkout's computation, the
    torch float32 product and copy limits ``pk`` measured in the same run: machine.product_peak,
    the better of torch's matmul and its oneDNN 1×1 convolution) and the fraction of it each side
    reached (bound / median)."""
    from hyperzzw_core import reference as R

    from .costs import roofline_seconds, step_cost
    from .machine import product_peak

    for r in rows:
        cost = step_cost(R.preset(r["config"]), r["batch"], 4, r["kind"])
        bound = roofline_seconds(cost, product_peak(pk), pk["torch_copy"])
        r["bound"] = {"seconds": bound, "gflop": cost.flops / 1e9, "gbytes": cost.bytes / 1e9}
        for side in ("A", "B"):
            r[side]["of_bound"] = bound / r[side]["median"]


def _product_peaks(pk: dict[str, Any]) -> str:
    """The float32 product limits in words, the peak that bounds use first (machine.product_peak)."""
    from .machine import product_peak

    mm = pk["torch_matmul_float32"]
    conv = pk.get("torch_conv1x1_float32")
    if conv is None:
        return f"matmul {mm / 1e9:.1f} GFLOP/s, the peak"
    return (
        f"peak {product_peak(pk) / 1e9:.1f} GFLOP/s, the better of matmul {mm / 1e9:.1f} and oneDNN's 1×1 "
        f"convolution {conv / 1e9:.1f}"
    )


def _status(estimates: list[float], limit: float) -> str:
    """ "met" when every estimate is within ``limit``, "not met" when none is; else the estimates
    disagree (the machine's noise straddles the target) and nothing is claimed."""
    within = [e <= limit for e in estimates]
    if all(within):
        return "met"
    return "not met" if not any(within) else "not shown above noise"


def verdicts(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's targets (``ISSUE_16_TARGETS``) that this run measured, each with its verdict.

    Time: both estimates of B/A, the pooled ``time_ratio`` and the per-round ``paired_ratio``, must
    be within the target for "met" (:func:`_status`). With the roofline bound of the row (see
    :func:`add_bounds`), the time the target allows (limit × A's median) is set against it: below
    the bound the target is out of reach on this machine whatever the code does; otherwise the
    share of the bound the target asks for (bound / allowed) is given beside B's share. Where
    side B measured its eager floor (:mod:`benchmarks.floor`), ``floor_share`` is the median
    round's floor over the allowed time, and ``floor_shares`` each round's floor over the time the
    target allows against A's process of the same round (``floor_over_a`` / limit), their median
    ``floor_paired``. Where both ``floor_share`` and ``floor_paired`` are above 1, ``out_of_reach`` is True: no
    execution of B's arithmetic call by call with torch's kernels meets the target.
    Memory: the live peak's ratio where the run measured it, else the peak RSS's.
    Only where side A is ``ISSUE_16_BASELINE`` (the targets are ratios to it) and for ``cifar10()``,
    the configuration they are set for; [] otherwise.
    """
    if res["config"] != "cifar10" or res["commit"] != ISSUE_16_BASELINE:
        return []
    out = []
    for r in res["rows"]:
        limits = ISSUE_16_TARGETS.get((r["kind"], r["batch"]), {})
        name = f"{r['kind']} B={r['batch']}"
        if "time" in limits:
            v: dict[str, Any] = {
                "target": f"{name} time",
                "limit": limits["time"],
                "measured": r["time_ratio"],
                "paired": r["paired_ratio"],
                "status": _status([r["time_ratio"], r["paired_ratio"]], limits["time"]),
            }
            allowed = limits["time"] * r["A"]["median"]
            if "bound" in r:
                v.update(allowed=allowed, bound=r["bound"]["seconds"], needs=r["bound"]["seconds"] / allowed)
                v["b_share"] = r["B"]["of_bound"]
                if allowed < r["bound"]["seconds"]:
                    v["status"] = "out of reach (allowed time below the bound)"
            floor = r["B"].get("floor", {}).get("seconds")
            if floor is not None:
                shares = [f / limits["time"] for f in r.get("floor_over_a", []) if f is not None]
                v.update(
                    floor=floor,
                    floor_share=floor / allowed,
                    floor_shares=shares,
                    floor_paired=statistics.median(shares),
                )
                v["out_of_reach"] = v["floor_share"] > 1 and v["floor_paired"] > 1
            out.append(v)
        if "memory" in limits:
            live = "live_ratio" in r
            ratio = r["live_ratio"] if live else r["peak_ratio"]
            out.append(
                {
                    "target": f"{name} memory ({'live peak' if live else 'peak RSS'})",
                    "limit": limits["memory"],
                    "measured": ratio,
                    "status": _status([ratio], limits["memory"]),
                }
            )
    return out


def _target_lines(res: dict[str, Any]) -> list[str]:
    """The table of :func:`verdicts`, when the run measured any of issue 16's targets."""
    rows = verdicts(res)
    if not rows:
        return []
    who = "B under the opt-in `Terminator.compile()`" if res.get("compile_b") else "B as it runs by default"
    lines = [
        "",
        f"Issue 16's targets in this run ({who}): met only when the pooled and the per-round B/A are "
        "both within the target. The time a target allows is its limit times A's median; set against "
        "the roofline bound (the table of bounds above), it gives the share of the bound the target asks "
        "for. B's eager floor (the table just above; its median round, then the median and range of each "
        "round's floor over the time allowed against A's process of the same round) over the allowed time: "
        "where both are above 100%, no execution that runs B's arithmetic call by call with torch's kernels "
        "(its products as called or, with the same bits, as oneDNN's channels-last convolutions) meets the "
        "target; only fused or other kernels can.",
        "",
        "| target | allows B/A | measured B/A | status | allowed time against the bound | B's eager floor against "
        "the allowed time |",
        "|---|---|---|---|---|---|",
    ]
    for v in rows:
        measured = f"{v['measured']:.2f}x" + (f" (per round {v['paired']:.2f}x)" if "paired" in v else "")
        bound = (
            f"{v['allowed']:.4f} s allowed, bound {v['bound']:.4f} s: asks for {v['needs']:.0%} of the bound, "
            f"B reaches {v['b_share']:.0%}"
            if "allowed" in v
            else "–"
        )
        floor = "–"
        if "floor" in v:
            fs = v["floor_shares"]
            floor = (
                f"{v['floor']:.4f} s: {v['floor_share']:.0%}; per round {v['floor_paired']:.0%} "
                f"({min(fs):.0%} to {max(fs):.0%})"
            ) + (" (out of reach of an eager execution)" if v["out_of_reach"] else "")
        lines.append(f"| {v['target']} | ≤ {v['limit']:.2f}x | {measured} | **{v['status']}** | {bound} | {floor} |")
    return lines


def _heap_lines(res: dict[str, Any]) -> list[str]:
    """With ``as_cli``, the process heap setting each side ran under (the same for every case)."""
    if not res.get("as_cli") or not res["rows"]:
        return []
    row = res["rows"][0]
    return [
        f"`--as-cli`: each worker ran under its side's `hyperzzw train` heap setting. A: {row['A']['heap']}; "
        f"B: {row['B']['heap']}.",
        "",
    ]


def _compile_lines(res: dict[str, Any]) -> list[str]:
    """With ``compile_b``: B ran under ``Terminator.compile()``, and what compiling cost."""
    if not res.get("compile_b"):
        return []
    costs = ", ".join(f"{r['kind']} B={r['batch']} {r['B']['first_call']:.0f} s" for r in res["rows"])
    return [
        "`--compile-b`: side B ran under `Terminator.compile()` (opt-in), side A as the revision runs by "
        f"default. B's first call in each process compiled and is not timed (median: {costs}).",
        "",
    ]


def render(res: dict[str, Any]) -> str:
    """A markdown report of :func:`compare`'s rows."""
    lines = [
        f"## A/B: `{res['rev']}` ({res['commit'][:12]}) against this checkout",
        "",
        f"`{res['command']}`, {res['date']}; {res['rounds']} rounds of fresh processes, interleaved "
        f"A, B, A, B, …, {res['reps']} timed calls each; torch float32 on the CPU, "
        f"`{res['config']}()`; load average before {res['load_before'][0]:.2f}, after "
        f"{res['load_after'][0]:.2f}. B/A below 1: this checkout is faster or smaller.",
        "",
        *_heap_lines(res),
        *_compile_lines(res),
        "B/A per round: each round's B process against its A process (the paired comparison), median "
        "and range over the rounds.",
        "",
        "| measurement | A median (min) | B median (min) | B/A time | B/A per round: median (range) | A peak "
        "| B peak | B/A peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        a, b = r["A"], r["B"]
        rr = r["round_ratios"]
        lines.append(
            f"| {r['kind']} B={r['batch']} | {a['median']:.4f} s ({a['min']:.4f}) | {b['median']:.4f} s "
            f"({b['min']:.4f}) | {r['time_ratio']:.2f}x | {r['paired_ratio']:.2f}x ({min(rr):.2f} to "
            f"{max(rr):.2f}) | {a['peak_delta'] / 2**20:.0f} MiB | {b['peak_delta'] / 2**20:.0f} MiB | "
            f"{r['peak_ratio']:.2f}x |"
        )
    live = [r for r in res["rows"] if "live_ratio" in r]
    if live:
        lines += [
            "",
            f"Live peak: one more process per side and case (its first call and one more) under `GLIBC_TUNABLES="
            f"{LIVE_TUNABLE}` (every block of 64 KiB or more mapped on allocation and returned when freed): "
            "the memory the calls hold at once, to a page, without what the allocator keeps for reuse.",
            "",
            "| measurement | A live peak | B live peak | B/A live peak |",
            "|---|---|---|---|",
        ]
        for r in live:
            lines.append(
                f"| {r['kind']} B={r['batch']} | {r['A']['live_peak'] / 2**20:.0f} MiB | "
                f"{r['B']['live_peak'] / 2**20:.0f} MiB | {r['live_ratio']:.2f}x |"
            )
    if "peaks" in res:
        pk = res["peaks"]
        lines += [
            "",
            f"Roofline bounds, from the machine's limits measured in the same run (torch float32 products: "
            f"{_product_peaks(pk)}; copy {pk['torch_copy'] / 1e9:.1f} GB/s) and "
            "the cost model of this checkout's computation (benchmarks/costs.py): bound = max(FLOPs / "
            "product peak, bytes / copy bandwidth); a side's share is bound / its median.",
            "",
            "| measurement | model GFLOP | model GB | bound | A share | B share |",
            "|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            bd = r["bound"]
            lines.append(
                f"| {r['kind']} B={r['batch']} | {bd['gflop']:.2f} | {bd['gbytes']:.2f} | {bd['seconds']:.4f} s | "
                f"{r['A']['of_bound']:.0%} | {r['B']['of_bound']:.0%} |"
            )
    lines += _floor_lines(res)
    lines += _target_lines(res)
    return "\n".join(lines) + "\n"


def _floor_lines(res: dict[str, Any]) -> list[str]:
    """The table of side B's eager floors (:mod:`benchmarks.floor`), where its processes measured them:
    the median round's in full, and every round's total."""
    rows = [r for r in res["rows"] if "floor" in r["B"]]
    if not rows:
        return []
    lines = [
        "",
        "Side B's eager floor, measured by each of its processes after its timed calls (benchmarks/floor.py); "
        "the round whose floor is the median is shown. The kernel floor replays every aten call of one call "
        "(forward and backward) that computes values alone, on fresh tensors of the same layout: matrix "
        "products, convolutions, standardisations, and the other element-wise operators and reductions "
        "(views, copies, concatenations, fills and constants are left out). The call floor is the same kind "
        "of call on a smaller input that makes the same count of every aten call, less its own kernel floor. "
        "Their sum is a lower estimate of any execution that runs the same arithmetic call by call with "
        "torch's kernels, which keeps every value to the bit. The products are taken at the faster of the "
        "call and oneDNN's 1×1 convolution on operands laid out channels-last, where the convolution gives "
        "the call's values to the bit (checked call by call; the products column gives both, and how many "
        "products were taken as convolutions).",
        "",
        "| measurement | B median | kernel floor: products + convolutions + standardisations + other (calls) "
        "| products: as called → channels-last where the bits agree | call floor (smaller input) | eager "
        "floor | floor / B median | floor per round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fl, med = r["B"]["floor"], r["B"]["median"]
        k = fl["kernels"]
        by = k["by_category"]
        c = fl["calls"]
        if c["seconds"] is None:
            calls, total, share = f"n/a: {c['why']}", "–", "–"
        else:
            shape = "x".join(map(str, c["shape"]))
            calls = f"{c['seconds']:.4f} s (B={c['batch']}, {shape}: {c['call']:.4f} s less {c['kernels']:.4f} s)"
            total, share = f"{fl['seconds']:.4f} s", f"{fl['seconds'] / med:.0%}"
        products = k.get("products_channels_last")
        shown = dict(by, gemm=products["seconds"]) if products else by
        parts = " + ".join(f"{shown.get(cat, 0.0):.4f}" for cat in CATEGORIES)
        left = k.get("left_out") or {}
        failed = ""
        if left:
            failed = "; left out, failed on fresh values: " + ", ".join(f"{n} ×{m}" for n, m in sorted(left.items()))
        rounds = ", ".join("–" if f is None else f"{f:.4f}" for f in r["B"]["floor_rounds"])
        kernels = k.get("seconds_channels_last", k["seconds"])
        lines.append(
            f"| {r['kind']} B={r['batch']} | {med:.4f} s | {kernels:.4f} s: {parts} s ({k['n_calls']})"
            f"{failed} | {_products_cell(k)} "
            f"| {calls} | {total} | {share} | {rounds} |"
        )
    return lines


def _products_cell(k: dict[str, Any]) -> str:
    """The floor table's products: as called, then at the channels-last figure where measured
    (benchmarks/floor.replay with ``layouts``: each product at the faster of the two, so never above
    the call's), which the kernel floor's products column gives."""
    gemm = k["by_category"]["gemm"]
    p = k.get("products_channels_last")
    if p is None:
        return f"{gemm:.4f} s (channels-last not measured)"
    unequal = f"; {p['unequal']} gave other bits" if p["unequal"] else ""
    return f"{gemm:.4f} s → {p['seconds']:.4f} s ({p['converted']} of {p['calls']} as convolutions{unequal})"


def run(
    rev: str,
    *,
    quick: bool,
    rounds: int | None,
    reps: int | None,
    config: str | None,
    out: Path | None,
    command: str,
    now: str,
    log: Callable[[str], None],
    cases: tuple[tuple[str, int], ...] | None = None,
    as_cli: bool = False,
    compile_b: bool = False,
) -> dict[str, Any]:
    """Build ``rev``, compare, write ``ab.json`` and ``ab.md`` to ``out`` (when given); return the
    result. ``cases`` ((kind, batch), …) default to issue 16's (``DEFAULT_CASES``; quick: ``QUICK_CASES``)."""
    root = repo_root(Path(__file__).resolve().parent)
    commit = resolve(root, rev)
    rounds = rounds or (1 if quick else 5)
    reps = reps or (1 if quick else 3)
    config = config or ("tiny" if quick else "cifar10")
    tmp = Path(tempfile.mkdtemp(prefix="hyperzzw-ab-"))
    try:
        log(f"ab: installing {rev} ({commit[:12]}) into {tmp}")
        site = install_revision(root, commit, tmp)
        res: dict[str, Any] = {
            "command": command,
            "date": now,
            "rev": rev,
            "commit": commit,
            "rounds": rounds,
            "reps": reps,
            "config": config,
            "load_before": load_average(),
            "as_cli": as_cli,
            "compile_b": compile_b,
        }
        cases = cases or (QUICK_CASES if quick else DEFAULT_CASES)
        res["rows"] = compare(
            cases, site, rounds=rounds, reps=reps, config=config, log=log, as_cli=as_cli, compile_b=compile_b
        )
        res["load_after"] = load_average()
        log("ab: measuring the machine's matmul and copy limits (for the roofline bounds)")
        from .machine import peaks

        res["peaks"] = peaks(quick)
        add_bounds(res["rows"], res["peaks"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(res)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ab.json").write_text(json.dumps(res, indent=1))
        (out / "ab.md").write_text(text)
        log(f"wrote {out / 'ab.md'} and {out / 'ab.json'}")
    return res
