"""The optional compiled CPU kernels (``_cpu_kernels.c``), built at install where a C compiler is
(pyproject.toml, ``optional = true``). Without them the torch backend takes torch's own kernels
for the same quantities (oneDNN's depth-wise convolution and its gradients and its matrix
product, the native batch-norm forward, the batched matrix product); :func:`compiled_kernels`
says which this installation has, and the benchmarks record it (benchmarks/machine.py).
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


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """The extension module, imported on the first call; None where it was not built.

    The torch backend calls this after importing torch. The extension needs the OpenMP runtime
    ``libgomp.so.1``, and the dynamic loader shares a library of that name with the one already
    loaded, so the kernels run in torch's own OpenMP team (``_cpu_kernels.c``). Loaded before
    torch, the extension would bring the compiler's runtime in first, and torch would then get
    that one instead of its own, whatever its age."""
    try:
        return importlib.import_module(EXTENSION)
    except ImportError:  # built without a C compiler
        return None


def compiled_kernels() -> dict[str, bool]:
    """Each compiled kernel by name (:data:`KERNELS`): whether this installation has it. Where
    torch is imported, whether the extension loads; before that, whether it is installed (found,
    not loaded: see :func:`load_cpu_kernels`)."""
    if "torch" in sys.modules:
        present = load_cpu_kernels() is not None
    else:
        present = importlib.util.find_spec(EXTENSION) is not None
    return dict.fromkeys(KERNELS, present)
