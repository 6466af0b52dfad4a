"""Semi-public building blocks of the core, for adapters (``hyperzzw_core.adapters``) only.

The adapters import the core through its public names (``hyperzzw_core.<operator>``,
``hyperzzw_core.params``, ``hyperzzw_core.regularizer``) and through this one module, nothing
else (a contract in pyproject.toml, ``[tool.importlinter]``, checks it). What is here is not for
users: the functions skip the input checks of the public operators (the adapter has done them once
per module call) and may change between minor versions.

* :func:`block_slow_kernels`, :func:`block_checked_inputs`, :func:`block_forward` — one SFNE block
  (spec §1.3, §2.11) in three steps: the input-independent slow-network kernels, the validated
  inputs, the unchecked forward;
* :func:`network_slow_kernels`, :func:`network_forward`, :func:`network_slow_loss` — the same for
  the whole Terminator (spec §1.2), and its weighted slow neural loss;
* :func:`label_smoothing_cross_entropy_unchecked` — the classification loss without label checks;
* :func:`check_label_range` — the label check of the public cross-entropy (integers in [0, K));
* :func:`cupy_kernels` — the CuPy backend's fused CUDA kernels (their VJPs serve the CuPy adapter);
* :func:`backend` — the backend object of a namespace (:mod:`hyperzzw_core.backends`);
* :func:`as_matrices`, :func:`from_matrices` — the global product's grid layout of a sequence
  (row-major, zero-padded after position L; docs/spec-1d.md), for the CuPy adapter's VJP.
"""

from __future__ import annotations

from ._backend import backend
from ._block import _forward as block_forward
from ._block import _slow_kernels as block_slow_kernels
from ._block import checked_inputs as block_checked_inputs
from ._losses import _label_smoothing_cross_entropy as label_smoothing_cross_entropy_unchecked
from ._losses import check_label_range
from ._network import _forward as network_forward
from ._network import _slow as network_slow_loss
from ._network import _slow_kernels as network_slow_kernels
from .backends import as_matrices, cupy_kernels, from_matrices

__all__ = [
    "as_matrices",
    "backend",
    "block_checked_inputs",
    "block_forward",
    "block_slow_kernels",
    "check_label_range",
    "cupy_kernels",
    "from_matrices",
    "label_smoothing_cross_entropy_unchecked",
    "network_forward",
    "network_slow_kernels",
    "network_slow_loss",
]
