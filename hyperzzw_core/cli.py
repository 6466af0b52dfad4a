"""The ``hyperzzw`` command line: ``verify``, ``train``, ``show-kernels``, ``bench``.

Each subcommand imports what it needs only when it runs, so ``hyperzzw verify`` never imports torch
unless the implementation under test does.

Every failure is one line on stderr, ``hyperzzw <command>: <message>``, and a non-zero exit status:
2 for usage and data errors (bad arguments, data, checkpoints, an output folder in use; every
``ValueError`` and ``FileNotFoundError``), 3 for a diverged training run, 1 for a failed ``verify``
and for anything unexpected, 130 on Ctrl-C. ``--debug`` anywhere on the line shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_KIT = 0, 1, 2, 3
"""``hyperzzw verify`` exit codes: every check passed; a check failed (or a misspelt operator, or a
missing one under ``--require-all``); the command could not run (bad arguments, unknown ``--ops``,
the implementation cannot be loaded or exposes no operator); the kit's own goldens are missing or
corrupted."""


def _strict_json(value):
    """Replace non-finite floats by None, so that the output is strict JSON (RFC 8259)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def _verify(a: argparse.Namespace) -> int:
    from .conformance.goldens import KitError
    from .conformance.isolate import LoadError, run_isolated
    from .conformance.runner import DTYPES, format_table, progress_line, summarize

    def fail(code: int, message: str) -> int:
        print(f"hyperzzw verify: {message}", file=sys.stderr)
        return code

    if a.timeout is not None and not a.timeout > 0:
        return fail(EXIT_USAGE, f"--timeout: expected a positive number of seconds, got {a.timeout}")
    dtypes = list(DTYPES) if a.dtype == "all" else [a.dtype]
    ops = [o.strip() for o in a.ops.split(",") if o.strip()] if a.ops else None
    try:
        run = run_isolated(
            a.impl,
            ops=ops,
            dtypes=dtypes,
            gradients=not a.no_grad,
            device=a.device,
            timeout=a.timeout,
            progress=None if a.quiet else progress_line,
            **({"directory": Path(a.goldens)} if a.goldens else {}),
        )
    except KitError as exc:
        return fail(EXIT_KIT, f"kit error: {exc}")
    except LoadError as exc:
        return fail(EXIT_USAGE, f"cannot load implementation {a.impl!r}: {exc}")
    except ValueError as exc:  # unknown --ops
        return fail(EXIT_USAGE, f"--ops: {exc}")
    results, cov = run.results, run.coverage
    if ops:
        cov.missing = [o for o in cov.missing if o in ops]
    if not results:
        return fail(
            EXIT_USAGE, f"{a.impl} exposes none of the operators{' selected' if ops else ''}; nothing was checked"
        )
    failed = any(r.status != "pass" for r in results) or bool(cov.near_misses) or (a.require_all and bool(cov.missing))
    n_grad = sum(r.kind != "forward" for r in results)
    if a.json:
        report = {
            "implementation": a.impl,
            "dtypes": dtypes,
            "passed": not failed,
            "exit_code": EXIT_FAIL if failed else EXIT_PASS,
            "forward_checks": len(results) - n_grad,
            "gradient_checks": n_grad,
            "coverage": cov.to_dict(),
            "summary": summarize(results),
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(_strict_json(report), indent=1, allow_nan=False))
    else:
        print(f"hyperzzw verify: {a.impl} ({', '.join(dtypes)}{', device ' + a.device if a.device else ''})")
        print(format_table(results, cov))
        if a.require_all and cov.missing:
            print(f"FAIL: --require-all and {len(cov.missing)} kit operators are missing")
    return EXIT_FAIL if failed else EXIT_PASS


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check an implementation against the reference's golden vectors",
        description="Run every golden case that the implementation covers, forward and "
        "(where it exposes them) gradients, in a worker process with a per-case "
        "timeout, and judge it under the tolerance policy. Exit codes: 0 all "
        "passed; 1 a check failed (or a misspelt operator, or a missing one with "
        "--require-all); 2 usage error (bad arguments, unknown --ops, the "
        "implementation cannot be loaded or exposes no operator); 3 the kit's "
        "goldens are missing or corrupted.",
    )
    p.add_argument(
        "--impl",
        required=True,
        help="the implementation: a module (my_pkg.my_module), module:object, or path/to/file.py",
    )
    p.add_argument("--ops", help="comma-separated operator names (default: all it covers)")
    p.add_argument("--dtype", choices=["float64", "float32", "all"], default="float64")
    p.add_argument("--device", help="passed to the implementation's from_numpy (e.g. cuda)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per case (one golden case in one dtype, forward and gradients) before it "
        "is reported as a timeout and the run goes on (default 120)",
    )
    p.add_argument("--require-all", action="store_true", help="fail when the implementation lacks any kit operator")
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output on stdout (strict JSON: unknown or infinite errors are null)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-operator progress lines on stderr")
    p.add_argument("--no-grad", action="store_true", help="forward values only")
    p.add_argument(
        "--goldens", help="a golden directory other than the packaged one (its manifest is checked the same way)"
    )
    p.set_defaults(func=_verify)


def _lazy(module: str, adder: str) -> Callable[[argparse._SubParsersAction], None]:
    def add(sub: argparse._SubParsersAction) -> None:
        import importlib

        getattr(importlib.import_module(module, __package__), adder)(sub)

    return add


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="the benchmark suite (same as python -m benchmarks; --help lists its commands)",
        description="Benchmarks of every operator and the whole Terminator; writes benchmarks.md, "
        ".png and .json. Arguments are those of python -m benchmarks.",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER)  # main() hands them to the suite before parsing


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_verify,
    _lazy(".train.cli", "add_train"),
    _lazy(".train.cli", "add_show_kernels"),
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperzzw",
        description="HyperZ·Z·W / Terminator tools.",
        epilog="--debug (anywhere): show the traceback of a failure. Exit status: 0 ok, "
        "1 verify failed or an unexpected error, 2 usage or data error, "
        "3 training diverged, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def exit_status(exc: BaseException) -> int:
    """The documented exit status of a failure (see the module docstring)."""
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 2 if isinstance(exc, (ValueError, FileNotFoundError)) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = argv[0] if argv and not argv[0].startswith("-") else "hyperzzw"
    try:
        if argv[:1] == ["bench"]:  # everything after it is the suite's own (argparse.REMAINDER drops leading options)
            from .benchmarks import main as bench_main

            return bench_main(argv[1:], prog="hyperzzw bench")
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except SystemExit:
        raise
    except BaseException as exc:  # broad on purpose: one readable line instead of a traceback
        if debug:
            raise
        code = exit_status(exc)
        kind = "" if code in (2, 3, 130) else f"{type(exc).__name__}: "
        hint = " (run with --debug for the traceback)" if code == 1 else ""
        print(f"hyperzzw {command}: {kind}{_one_line(exc)}{hint}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
