"""Where the torch backend takes the compiled CPU kernels (hyperzzw_core/backends/_compiled.py):
only where this CPU runs their 16-float vectors as single registers (AVX-512). Narrower, the
compiler splits every vector and keeps the tiles' accumulators on the stack, and the kernels run
more than ten times slower than torch's own (docs/speed.md, "Twentieth session").

The gate is checked on stand-in extensions (every CPU runs these), and the extension's own
reading of the CPU against /proc/cpuinfo's flags, read independently here.
"""

from __future__ import annotations

import os
import platform
import types

import pytest

from hyperzzw_core.backends import _compiled


def _extension(isa: str, full_width: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(vector_isa=isa, full_width=full_width)


@pytest.mark.parametrize(
    ("isa", "full_width", "taken"),
    [("x86-64-v4", 1, True), ("x86-64-v3", 0, False), ("default", 0, False), ("native", 0, False), ("native", 1, True)],
)
def test_the_kernels_are_taken_only_at_their_full_vector_width(
    monkeypatch: pytest.MonkeyPatch, isa: str, full_width: int, taken: bool
) -> None:
    extension = _extension(isa, full_width)
    monkeypatch.setattr(_compiled, "_import_extension", lambda: extension)
    loaded = _compiled.load_cpu_kernels.__wrapped__()  # the cached loader's body, on the stand-in
    assert loaded is (extension if taken else None)
    status = _compiled.cpu_kernels_status()
    if taken:
        assert status == f"built and taken ({isa})"
    else:
        assert status.startswith(f"built, not taken: this CPU runs the kernels' {isa} code")
        assert "AVX-512" in status


def test_an_installation_without_the_extension_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compiled, "_import_extension", lambda: None)
    assert _compiled.load_cpu_kernels.__wrapped__() is None
    assert _compiled.cpu_kernels_status().startswith("not built")


# x86-64-v3 and x86-64-v4 (the x86-64 psABI's micro-architecture levels) as /proc/cpuinfo names
# their features (LZCNT as "abm")
V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
V4 = V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def test_the_extension_names_the_code_this_cpu_runs() -> None:
    """The extension's ``vector_isa`` (the clone GCC's resolver runs) and ``full_width`` against
    the CPU's flags; the torch backend holds the extension exactly where it is full width."""
    pytest.importorskip("torch")  # the extension loads after torch (its OpenMP runtime)
    from hyperzzw_core.backends import _torch_functions as TF

    extension = _compiled._import_extension()
    if extension is None:
        pytest.skip("the compiled CPU kernels are not built")
    if platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo") or extension.vector_isa == "native":
        pytest.skip("reads the x86-64 flags of /proc/cpuinfo, for kernels built with GCC's clones")
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    expected = "x86-64-v4" if V4 <= flags else "x86-64-v3" if V3 <= flags else "default"
    assert extension.vector_isa == expected
    assert bool(extension.full_width) == (expected == "x86-64-v4")
    assert (TF.cpu_kernels is extension) == (expected == "x86-64-v4")
