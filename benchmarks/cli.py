"""Command line: ``python -m benchmarks [all|machine|ops|network|conv-threshold|compile|report|ab] [--quick]``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def default_out() -> Path:
    """Where reports go by default: ``docs/`` of a source checkout, else ``./hyperzzw-benchmarks``."""
    if (ROOT / "pyproject.toml").exists() and (ROOT / "docs").is_dir():
        return ROOT / "docs"
    return Path.cwd() / "hyperzzw-benchmarks"


RESULTS_NAME = "benchmarks.json"
COMPILE_NAME = "benchmarks-compile.json"

INTRO = """\
Produced by `hyperzzw bench` (= `python -m benchmarks`: the whole suite, its duration on the \
machine below is given in the next line; `--quick` is a smoke test of every code path in about a minute). Raw numbers: \
`docs/benchmarks.json`. Every number below comes from the same run unless it says otherwise. \
The machine is shared: other jobs ran at times, which shows as a load average above 0 and as spread \
between the median and the minimum; comparisons that matter (cached vs uncached, reference vs torch, \
direct vs FFT) are interleaved (A, B, A, B, …) so that load changes hit both sides alike."""

OP_SUBSET = ("pointwise_linear", "g_ibs", "hyperzzw_global", "depthwise_conv k=9", "sfne_block (block 0, bf 4)")


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", flush=True)


def _now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def _machine(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    from .machine import describe, peaks

    _log("machine: measuring the matmul and copy limits")
    info = describe()
    pk = peaks(quick)
    _log(
        f"  {info['cpu']}: torch matmul f32 {pk['torch_matmul_float32'] / 1e9:.1f} GFLOP/s, "
        f"f64 {pk['torch_matmul_float64'] / 1e9:.1f} GFLOP/s, oneDNN 1x1 convolution f32 "
        f"{pk.get('torch_conv1x1_float32', float('nan')) / 1e9:.1f} GFLOP/s, copy {pk['torch_copy'] / 1e9:.1f} GB/s"
    )
    return info, pk


def _ops(
    pk: dict[str, Any], quick: bool, backends: list[str] | None, dtypes: list[str] | None, only: list[str] | None
) -> list[dict[str, Any]]:
    from .ops import CASES, available_backends, run_sweep

    bks = backends or available_backends()
    dts = dtypes or ["float32", "float64"]
    cases = [c for c in CASES if not only or any(o in c.label for o in only)]
    subset = [c for c in cases if c.label in OP_SUBSET]
    if quick:
        b, c, reps, budget, cutoff = 2, 12, 1, 0.2, 0.3
        hs, cs, bs = [8], [12], [1]
    else:
        b, c, reps, budget, cutoff = 8, 24, 3, 2.0, 1.0
        hs, cs, bs = [8, 16, 32, 64, 128], [12, 48, 144], [1, 8, 32]
    _log("operators: sweep over H")
    rows = run_sweep(
        backends=bks,
        dtypes=dts,
        sizes=[(b, c, h) for h in hs],
        cases=cases,
        peaks=pk,
        reps=reps,
        budget=budget,
        cutoff=cutoff,
        sweep="H",
        log=_log,
    )
    sub_bk = [x for x in bks if x in ("reference", "torch-cpu")]
    h0 = 16 if quick else 32
    for sweep, sizes in (("C", [(b, cc, h0) for cc in cs]), ("B", [(bb, c, h0) for bb in bs])):
        _log(f"operators: sweep over {sweep}")
        for bk, dt in (("torch-cpu", "float32"), ("reference", "float64")):
            if bk in sub_bk and dt in dts:
                rows += run_sweep(
                    backends=[bk],
                    dtypes=[dt],
                    sizes=sizes,
                    cases=subset,
                    peaks=pk,
                    reps=reps,
                    budget=budget,
                    cutoff=cutoff * 3,
                    sweep=sweep,
                    log=_log,
                )
    return rows


def compile_verdict(rows: list[dict[str, Any]]) -> str:
    """What the torch.compile measurement means for a user, from its rows."""

    def say(r: dict[str, Any]) -> str:
        return f"{r['kind']} at B={r['B']} {r['eager'] / r['compiled']:.2f}x"

    faster = [r for r in rows if r["compiled"] < r["eager"]]
    slower = [r for r in rows if r["compiled"] >= r["eager"]]
    if not faster:
        return "torch.compile does not speed up the network on this machine: eager stays the default."
    out = "torch.compile pays off for " + ", ".join(map(say, faster)) + " (`model.compile()`)"
    if slower:
        out += "; it is slower for " + ", ".join(map(say, slower)) + ", which therefore stays eager"
    return out + ". Eager is the default; a compiler failure falls back to it with a warning."


def _compile_rows(quick: bool) -> dict[str, Any]:
    from .timing import load_average, run_worker

    rows = []
    for kind, b in (("forward", 2 if quick else 8), ("train", 2 if quick else 32)):
        res = {}
        for compiled in (False, True):
            spec = {
                "backend": "torch-cpu",
                "dtype": "float32",
                "kind": kind,
                "B": b,
                "H": 8 if quick else 32,
                "reps": 2 if quick else 5,
                "compile": compiled,
            }
            _log(f"compile: {kind} B={b} {'compiled' if compiled else 'eager'}")
            res[compiled] = run_worker([json.dumps(spec)], timeout=3000)
        rows.append(
            {
                "kind": kind,
                "B": b,
                "eager": res[False]["median"],
                "compiled": res[True]["median"],
                "first_call": res[True]["first_call"],
                "still_compiled": res[True]["compiled"],
            }
        )
        _log(
            f"  {kind} B={b}: eager {res[False]['median']:.3f} s, compiled {res[True]['median']:.3f} s "
            f"(first call {res[True]['first_call']:.0f} s)"
        )
    return {"date": _now(), "load": load_average(), "quick": quick, "rows": rows, "verdict": compile_verdict(rows)}


def cmd_all(args: argparse.Namespace) -> int:
    from . import convbench, network
    from .timing import load_average

    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "command": "python -m benchmarks " + " ".join(args.argv),
        "date": _now(),
        "quick": args.quick,
        "load_before": load_average(),
    }
    res["machine"], res["peaks"] = _machine(args.quick)
    _log("network: the training step (fresh process)")
    res["headline"] = network.headline(res["peaks"], args.quick, _log)
    _log("network: eval forward with and without the kernel cache")
    res["cache"] = network.cache_speedup(args.quick, _log)
    _log("network: reference against torch float64")
    res["compare"] = network.reference_vs_torch(args.quick, _log)
    _log("network: growth with H and B")
    res["growth"] = network.growth(res["peaks"], args.quick, _log)
    res["flop_counter"] = network.flop_counter_check(args.quick)
    _log("depth-wise convolution: direct vs FFT")
    res["conv"] = convbench.sweep(args.quick, _log)
    res["ops"] = _ops(res["peaks"], args.quick, args.backends, args.dtypes, args.ops)
    res["load_after"] = load_average()
    res["duration_s"] = time.perf_counter() - t0
    compiled = _out_dir(args) / COMPILE_NAME
    if compiled.exists():
        res["compile"] = json.loads(compiled.read_text())
    return _write(res, args)


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    if args.quick:  # a smoke test must not overwrite the real report
        return Path(tempfile.gettempdir()) / "hyperzzw-bench-quick"
    return default_out()


def _write(res: dict[str, Any], args: argparse.Namespace) -> int:
    from .report import render

    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS_NAME
    results.write_text(json.dumps(res, indent=1, default=float))
    path = render(res, out, INTRO)
    _log(f"wrote {path}, {path.with_suffix('.png')} and {results} ({res['duration_s']:.0f} s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = _out_dir(args)
    if not (out / RESULTS_NAME).exists():
        print(
            f"benchmarks report: no {out / RESULTS_NAME}; run the suite first (python -m benchmarks)", file=sys.stderr
        )
        return 2
    res = json.loads((out / RESULTS_NAME).read_text())
    if (out / COMPILE_NAME).exists():
        res["compile"] = json.loads((out / COMPILE_NAME).read_text())
    return _write(res, args)


def cmd_machine(args: argparse.Namespace) -> int:
    info, pk = _machine(args.quick)
    print(json.dumps({"machine": info, "peaks": pk}, indent=1, default=float))
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    _, pk = _machine(args.quick)
    _ops(pk, args.quick, args.backends, args.dtypes, args.ops)
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    from . import network

    _, pk = _machine(args.quick)
    network.headline(pk, args.quick, _log)
    network.cache_speedup(args.quick, _log)
    network.reference_vs_torch(args.quick, _log)
    network.growth(pk, args.quick, _log)
    return 0


def cmd_conv(args: argparse.Namespace) -> int:
    from . import convbench

    res = convbench.sweep(args.quick, _log)
    for k, v in res["derived"].items():
        _log(f"{k}: FFT from k = {v['measured_min_k']} (measured), {v['in_code']} in _backend.FFT_MIN_KERNEL")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    res = _compile_rows(args.quick)
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPILE_NAME).write_text(json.dumps(res, indent=1, default=float))
    _log(f"wrote {out / COMPILE_NAME} (merged into benchmarks.md by the next `all` or `report`)")
    _log(res["verdict"])
    return 0


def cmd_ab(args: argparse.Namespace) -> int:
    from .ab import ABError, parse_cases, run

    if not args.rev:
        print(
            "benchmarks ab: --rev REV is required (the git revision to compare this checkout against)", file=sys.stderr
        )
        return 2
    for name in ("rounds", "reps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"benchmarks ab: --{name} must be a positive integer, got {value}", file=sys.stderr)
            return 2
    try:
        cases = parse_cases(args.cases) if args.cases is not None else None
    except ABError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        run(
            args.rev,
            cases=cases,
            quick=args.quick,
            rounds=args.rounds,
            reps=args.reps,
            config=args.config,
            out=Path(args.out) if args.out else None,
            as_cli=args.as_cli,
            compile_b=args.compile_b,
            command="hyperzzw bench " + " ".join(args.argv),
            now=_now(),
            log=_log,
        )
    except ABError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "ab": cmd_ab,
    "all": cmd_all,
    "machine": cmd_machine,
    "ops": cmd_ops,
    "network": cmd_network,
    "conv-threshold": cmd_conv,
    "compile": cmd_compile,
    "report": cmd_report,
}


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Entry point of ``python -m benchmarks`` (and of ``hyperzzw bench``). Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument(
        "command",
        nargs="?",
        default="all",
        choices=sorted(COMMANDS),
        help="all (default): everything below except compile, then docs/benchmarks.{md,png}; "
        "machine: description and limits; ops: per-operator sweeps; network: whole network; "
        "conv-threshold: direct vs FFT; compile: torch.compile vs eager (slow: minutes of "
        "compilation; saved to benchmarks-compile.json and merged into the report); "
        "report: re-render benchmarks.md/.png from benchmarks.json; "
        "ab: this checkout against --rev, interleaved (see benchmarks/ab.py)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repetitions (smoke test); the report "
        "goes to $TMPDIR/hyperzzw-bench-quick unless --out is given",
    )
    p.add_argument(
        "--out",
        help="directory for benchmarks.md / .png / .json (default: docs/ of a source "
        "checkout, else ./hyperzzw-benchmarks)",
    )
    p.add_argument("--backends", nargs="+", help="operator sweeps: backends (default: all available)")
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], help="operator sweeps: dtypes")
    p.add_argument("--ops", nargs="+", help="operator sweeps: only operators whose label contains one of these")
    ab = p.add_argument_group("ab (side-by-side against a git revision)")
    ab.add_argument("--rev", help="the revision to compare with (e.g. HEAD~1, a branch, a commit id)")
    ab.add_argument("--rounds", type=int, help="interleaved rounds of fresh processes per side (default 5; quick 1)")
    ab.add_argument("--reps", type=int, help="timed calls per process (default 3; quick 1)")
    ab.add_argument("--config", help="network preset for ab (default cifar10; quick tiny)")
    ab.add_argument(
        "--cases",
        help="what to time, as KIND:BATCH,… with KIND train or forward (default train:32,forward:8,forward:1; "
        "the README's main job: --config digits --cases train:64,forward:64)",
    )
    ab.add_argument(
        "--as-cli",
        action="store_true",
        help="each side's workers run under the heap setting of that side's own `hyperzzw train` "
        "(train/memory.py's keep_freed_memory where the side has it; glibc's defaults otherwise)",
    )
    ab.add_argument(
        "--compile-b",
        action="store_true",
        help="side B runs under Terminator.compile() (opt-in; its first call compiles and is not timed), "
        "side A as the revision runs by default",
    )
    args = p.parse_args(argv)
    args.argv = argv
    return COMMANDS[args.command](args)
