"""Benchmarks of hyperzzw: every operator and the whole Terminator, on every available backend.

Run ``python -m benchmarks`` (the full suite; writes docs/benchmarks.md and docs/benchmarks.png)
or ``python -m benchmarks --quick`` (a smoke test). ``python -m benchmarks --help`` lists the
sub-commands. :func:`main` is the entry point (for ``hyperzzw bench``).
"""

from __future__ import annotations


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the benchmark command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from .cli import main as _main

    return _main(argv, prog)


__all__ = ["main"]
