"""Run the port in a worker process: a per-case timeout, and a port cannot end or hang ``verify``.

Why a process and not a watchdog thread: Python cannot stop a thread that is stuck in a port's
loop or in native code, and a port can end its own process (``os._exit``, a segfault). A worker
process (``multiprocessing``, *spawn* start method: no state shared with the parent) can be killed
and replaced. The parent loads the goldens itself and sends the worker one (case, dtype) at a time;
it waits at most ``timeout`` seconds for the answer. On a timeout the worker is killed, the case is
reported as ``timeout`` and a fresh worker continues with the next case; a worker that dies makes
its case a ``crash``. The worker writes the port's prints to stderr, so ``--json`` stays clean.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .goldens import GOLDEN_DIR, kit_operators, load_cases
from .runner import CaseResult, Coverage, Progress, coverage_of

DEFAULT_TIMEOUT = 120.0
"""Seconds per case (one golden case in one dtype, forward and gradients)."""
STARTUP_TIMEOUT = 120.0
"""Seconds the worker may take to import the implementation."""


class LoadError(Exception):
    """The implementation cannot be loaded (import error, exit or hang at import)."""


@dataclass
class IsolatedRun:
    results: list[CaseResult]
    coverage: Coverage


def _worker(conn, target: str, device: str | None, directory: str, ops: list[str] | None) -> None:
    """Worker process: load the port, then answer (case index, dtype, gradients) requests."""
    os.dup2(2, 1)  # the port's prints (and the kit's) go to stderr; the parent owns stdout
    sys.stdout = sys.stderr
    try:
        from .protocol import Implementation
        from .runner import planned_cases

        impl = Implementation(target, device=device)
        cases = planned_cases(impl, ops, Path(directory))
        conn.send(("ready", impl.public_callables(), [c.entry["file"] for c in cases]))
    except BaseException as exc:  # broad on purpose: SystemExit at import too: reported, not obeyed
        conn.send(("load_error", f"{type(exc).__name__}: {exc}"))
        return
    by_file = {c.entry["file"]: c for c in cases}
    from .runner import run_case

    while True:
        msg = conn.recv()
        if msg is None:
            return
        file, dtype, gradients = msg
        results = run_case(impl, by_file[file], dtype, gradients)
        conn.send(("results", [r.to_dict() for r in results]))


class _Worker:
    def __init__(self, target: str, device: str | None, directory: Path, ops: list[str] | None):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, target, device, str(directory), ops), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(max(STARTUP_TIMEOUT, 0)):
            self.stop()
            raise LoadError(f"the implementation did not finish importing within {STARTUP_TIMEOUT:g} s")
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            raise LoadError(
                f"the worker process ended while importing the implementation (exit code {self.proc.exitcode})"
            ) from None
        if reply[0] == "load_error":
            self.stop()
            raise LoadError(reply[1])
        _, self.public, self.files = reply

    def ask(self, file: str, dtype: str, gradients: bool, timeout: float) -> list[dict] | str:
        """The case's results, or "timeout" / "crash: …"."""
        try:
            self.conn.send((file, dtype, gradients))
            if not self.conn.poll(timeout):
                return "timeout"
            return self.conn.recv()[1]
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(5)
            code = self.proc.exitcode
            return (
                f"crash: the worker process running the port ended (exit code {code}"
                f"{', a signal' if code is not None and code < 0 else ''}); os._exit, a segfault or an abort "
                "in the port"
            )

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(0.5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def run_isolated(
    target: str,
    *,
    ops: list[str] | None,
    dtypes: list[str],
    gradients: bool,
    device: str | None,
    timeout: float | None,
    progress: Progress | None,
    directory: Path = GOLDEN_DIR,
) -> IsolatedRun:
    """Every covered case in every dtype, the port in a worker process (see the module docstring).

    Raises :class:`LoadError` when the port cannot be imported; kit errors (``KitError``) and unknown
    ``ops`` (``ValueError``) are raised before any worker starts.
    """
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    all_cases = {c.entry["file"]: c for c in load_cases(ops, directory)}  # checks the kit first
    worker = _Worker(target, device, directory, ops)
    cov = coverage_of(worker.public, kit_operators(directory))
    files = worker.files
    results: list[CaseResult] = []
    current: list[CaseResult] = []
    try:
        for n, file in enumerate(files):
            case = all_cases[file]
            for d in dtypes:
                start = time.perf_counter()
                answer = worker.ask(file, d, gradients, timeout)
                if isinstance(answer, list):
                    current.extend(CaseResult(**r) for r in answer)
                    continue
                if answer == "timeout":
                    msg = (
                        f"no result within {timeout:g} s (--timeout); the worker was stopped "
                        f"after {time.perf_counter() - start:.1f} s"
                    )
                    status = "timeout"
                else:
                    msg, status = answer[len("crash: ") :], "crash"
                current.append(CaseResult(case.op, case.label, d, "forward", status, None, None, msg))
                worker.stop()
                worker = _Worker(target, device, directory, ops)
            if n + 1 == len(files) or all_cases[files[n + 1]].op != case.op:
                if progress is not None:
                    progress(case.op, current)
                results.extend(current)
                current = []
    finally:
        worker.stop()
    return IsolatedRun(results, cov)
