"""The conformance kit: golden vectors, ``hyperzzw verify`` and a pytest plugin.

An implementation under test is any module or object exposing operators with the reference's
names and signatures; see :mod:`hyperzzw_core.conformance.protocol` for the protocol.
"""

from .goldens import KitError
from .protocol import DIFFERENTIABLE, Implementation
from .runner import CaseResult, Coverage, format_table, run

__all__ = ["DIFFERENTIABLE", "CaseResult", "Coverage", "Implementation", "KitError", "format_table", "run"]
