"""The optional compiled CPU kernels (``_cpu_kernels.c``), built at install where a C compiler is
(pyproject.toml, ``optional = true``). Without them the torch backend takes torch's own kernels
for the same quantities (oneDNN's depth-wise weight gradient, the native batch-norm forward);
:func:`compiled_kernels` says which this installation has, and the benchmarks record it
(benchmarks/machine.py). Importing this module imports no array library.
"""

from __future__ import annotations

from types import ModuleType

cpu_kernels: ModuleType | None
try:
    from . import _cpu_kernels as cpu_kernels
except ImportError:  # built without a C compiler
    cpu_kernels = None

DEPTHWISE_WEIGHT_GRAD_WIDTHS = (1, 3, 5, 7, 9)
"""The kernel widths kw of the compiled depth-wise weight gradient (any odd kh)."""


def compiled_kernels() -> dict[str, bool]:
    """Each compiled kernel by name: whether this installation has it (the kernels are built
    together, in one module)."""
    return {name: cpu_kernels is not None for name in ("depthwise_weight_grad", "standardize")}
