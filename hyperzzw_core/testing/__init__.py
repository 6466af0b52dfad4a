"""Testing tools: the operator registry and the tolerance policy (NumPy only; no torch import)."""

from .registry import REGISTRY, ErrorSample, OpSpec, Sample
from .tolerance import CloseResult, assert_close, check_close, to_numpy

__all__ = [
    "REGISTRY",
    "CloseResult",
    "ErrorSample",
    "OpSpec",
    "Sample",
    "assert_close",
    "check_close",
    "to_numpy",
]
