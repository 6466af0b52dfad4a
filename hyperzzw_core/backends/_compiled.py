"""The optional compiled CPU kernels (``_cpu_kernels.c``), built at install where a C compiler is
(pyproject.toml, ``optional = true``). Without them, and on a CPU without AVX-512 (:func:`takes`),
the torch backend takes torch's own kernels
for the same quantities (oneDNN's depth-wise convolution and its gradients and its matrix
product, the native batch-norm forward, the batched matrix product); :func:`compiled_kernels`
says which this installation takes, :func:`cpu_kernels_status` why, and the benchmarks record both
(benchmarks/machine.py).
Importing this module imports no array library and does not load the extension: the torch
backend loads it (:func:`load_cpu_kernels`) after torch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from types import ModuleType

EXTENSION = f"{__package__}._cpu_kernels"
"""The extension module's name."""

KERNELS = ("depthwise_conv", "depthwise_weight_grad", "linear_rows", "standardize", "global_products")
"""The compiled kernels, by the name :func:`compiled_kernels` gives them (the extension builds
them together)."""


def takes(module: ModuleType) -> bool:
    """Whether the torch backend takes the kernels of the loaded extension ``module``: only where
    their 16-float vectors are single registers on this CPU (AVX-512, ``module.full_width``).
    Elsewhere the compiler splits them and keeps the tiles on the stack (the x86-64-v3 clone of
    the eval forward's kernels took 449 ms at B = 1 where torch's own took 33 ms; docs/speed.md,
    "Twentieth session"), and torch's own kernels compute the same quantities."""
    return bool(getattr(module, "full_width", 0))


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """The extension module, imported on the first call; None where it was not built, or where
    this CPU would run it at a fraction of its vector width (:func:`takes`, :func:`cpu_kernels_status`).

    The torch backend calls this after importing torch. The extension needs the OpenMP runtime
    ``libgomp.so.1``, and the dynamic loader shares a library of that name with the one already
    loaded, so the kernels run in torch's own OpenMP team (``_cpu_kernels.c``). Loaded before
    torch, the extension would bring the compiler's runtime in first, and torch would then get
    that one instead of its own, whatever its age."""
    module = _import_extension()
    return module if module is not None and takes(module) else None


def _import_extension() -> ModuleType | None:
    try:
        return importlib.import_module(EXTENSION)
    except ImportError:  # built without a C compiler
        return None


def cpu_kernels_status() -> str:
    """One sentence on whether the torch backend takes the compiled kernels here, and why not.
    Loads the extension: call it after torch is imported (see :func:`load_cpu_kernels`)."""
    module = _import_extension()
    if module is None:
        return "not built (pip install -e . needs a C compiler; see pyproject.toml)"
    if not takes(module):
        return (
            f"built, not taken: this CPU runs the kernels' {module.vector_isa} code, where their 16-float "
            "vectors are not single registers (AVX-512, x86-64-v4, is needed; torch's own kernels are taken)"
        )
    return f"built and taken ({module.vector_isa})"


def compiled_kernels() -> dict[str, bool]:
    """Each compiled kernel by name (:data:`KERNELS`): whether this installation takes it. Where
    torch is imported, whether the extension loads and this CPU runs it at its full vector width
    (:func:`load_cpu_kernels`); before that, whether it is installed (found, not loaded, as the
    extension must load after torch)."""
    if "torch" in sys.modules:
        present = load_cpu_kernels() is not None
    else:
        present = importlib.util.find_spec(EXTENSION) is not None
    return dict.fromkeys(KERNELS, present)
