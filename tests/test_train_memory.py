"""``hyperzzw train``'s heap setting (train/memory.py): freed memory is reused, not faulted in again.

The effect is observed from outside the code under test, through the kernel's accounts: the
resident memory given back when a written 64 MiB block is freed (/proc/self/status), and the minor
page faults (``getrusage``) when it is made and written again; in a fresh process with and without
the setting (mallopt is process-wide, so never in the test process itself).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hyperzzw_core import cli
from hyperzzw_core.train import memory

_SCRIPT = """
import resource, sys
import numpy as np
from hyperzzw_core.train.memory import keep_freed_memory

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))

if sys.argv[1] == "keep":
    print(keep_freed_memory(), file=sys.stderr)
a = np.ones(16 << 20, dtype=np.float32)  # 64 MiB, every page written
held = rss()
del a
released = held - rss()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(16 << 20, dtype=np.float32)
print(released, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _measure(mode: str) -> tuple[int, int]:
    """(bytes returned to the system when the block is freed, page faults when it is made again)."""
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    released, faults = done.stdout.split()
    return int(released), int(faults)


@pytest.mark.skipif(memory._glibc() is None, reason="the C library is not glibc: the setting is a no-op there")
def test_freed_memory_is_kept_and_reused() -> None:
    (released, faults), (kept_released, kept_faults) = _measure("system"), _measure("keep")
    assert released >= 60 << 20, f"the control: glibc's default unmaps the freed 64 MiB (released {released} B)"
    assert kept_released < 4 << 20, f"with keep_freed_memory the freed 64 MiB stay ({kept_released} B released)"
    # made again, the block reuses the kept pages: at most a few faults (the default's count
    # depends on transparent huge pages: 16,384 with 4 KiB pages, a few hundred with 2 MiB)
    assert kept_faults < 64 and kept_faults < faults, (kept_faults, faults)


def test_returns_none_only_without_glibc() -> None:
    if memory._glibc() is None:
        assert memory.keep_freed_memory() is None
    else:  # the description names the library; run in a child, the setting is process-wide
        code = "from hyperzzw_core.train.memory import keep_freed_memory as k; print(k())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.startswith("glibc ") and "M_MMAP_MAX 0" in out


@pytest.mark.parametrize(("extra", "calls"), [((), 1), (("--malloc", "keep"), 1), (("--malloc", "system"), 0)])
def test_train_cli_applies_it_unless_told_not_to(monkeypatch, capsys, extra, calls) -> None:
    seen: list[int] = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: seen.append(1))
    # refused by the settings check (exit 2), after the heap setting: --malloc is not a run setting
    assert cli.main(["train", "--batch-size", "0", *extra]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert len(seen) == calls


def test_an_unknown_malloc_choice_is_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--malloc", "jemalloc"])
    assert exc.value.code == 2
    assert "--malloc: invalid choice: 'jemalloc'" in capsys.readouterr().err


def test_a_refused_setting_is_an_error_naming_it(monkeypatch) -> None:
    """A glibc that refuses mallopt (returns 0): one RuntimeError naming the parameter, not a silent no-op."""

    class RefusingLibc:
        def __init__(self) -> None:
            self.gnu_get_libc_version = lambda: b"2.99"
            self.mallopt = lambda param, value: 0

    monkeypatch.setattr(memory, "_glibc", RefusingLibc)
    with pytest.raises(RuntimeError, match=r"glibc 2\.99: mallopt\(M_MMAP_MAX, 0\) was refused"):
        memory.keep_freed_memory()
