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


def _verify(a: argparse.Namespace) -> int:
    from .conformance.protocol import Implementation
    from .conformance.runner import DTYPES, format_table, run, summarize

    dtypes = list(DTYPES) if a.dtype == "all" else [a.dtype]
    try:
        impl = Implementation(a.impl, device=a.device)
    except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
        print(f"hyperzzw verify: cannot load implementation {a.impl!r}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    ops = [o.strip() for o in a.ops.split(",")] if a.ops else None
    try:
        results = run(impl, ops=ops, dtypes=dtypes, gradients=not a.no_grad)
    except ValueError as exc:
        print(f"hyperzzw verify: {exc}", file=sys.stderr)
        return 2
    if not results:
        print(f"hyperzzw verify: {a.impl} exposes none of the operators"
              f"{' selected' if ops else ''}; nothing was checked", file=sys.stderr)
        return 2
    failed = any(r.status != "pass" for r in results)
    if a.json:
        print(json.dumps({"implementation": impl.name, "dtypes": dtypes, "passed": not failed,
                          "summary": summarize(results), "results": [r.to_dict() for r in results]},
                         indent=1, default=float))
    else:
        print(f"hyperzzw verify: {impl.name} ({', '.join(dtypes)}"
              f"{', device ' + a.device if a.device else ''})")
        print(format_table(results))
    return 1 if failed else 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check an implementation against the reference's golden vectors",
                       description="Run every golden case that the implementation covers, forward and "
                                   "(where it exposes them) gradients, and judge it under the tolerance "
                                   "policy. Exits 1 on any failure.")
    p.add_argument("--impl", required=True,
                   help="the implementation: a module (my_pkg.my_module), module:object, or path/to/file.py")
    p.add_argument("--ops", help="comma-separated operator names (default: all it covers)")
    p.add_argument("--dtype", choices=["float64", "float32", "all"], default="float64")
    p.add_argument("--device", help="passed to the implementation's from_numpy (e.g. cuda)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-grad", action="store_true", help="forward values only")
    p.set_defaults(func=_verify)


def _lazy(module: str, adder: str) -> Callable[[argparse._SubParsersAction], None]:
    def add(sub: argparse._SubParsersAction) -> None:
        import importlib
        getattr(importlib.import_module(module, __package__), adder)(sub)
    return add


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="the benchmark suite (same as python -m benchmarks; --help lists its commands)",
                       description="Benchmarks of every operator and the whole Terminator; writes benchmarks.md, "
                                   ".png and .json. Arguments are those of python -m benchmarks.", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)  # main() hands them to the suite before parsing


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_verify,
    _lazy(".train.cli", "add_train"),
    _lazy(".train.cli", "add_show_kernels"),
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperzzw", description="HyperZ·Z·W / Terminator tools.",
                                     epilog="--debug (anywhere): show the traceback of a failure. Exit status: 0 ok, "
                                            "1 verify failed or an unexpected error, 2 usage or data error, "
                                            "3 training diverged, 130 interrupted.")
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
    except BaseException as exc:  # noqa: BLE001 - one readable line instead of a traceback
        if debug:
            raise
        code = exit_status(exc)
        kind = "" if code in (2, 3, 130) else f"{type(exc).__name__}: "
        hint = " (run with --debug for the traceback)" if code == 1 else ""
        print(f"hyperzzw {command}: {kind}{_one_line(exc)}{hint}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
