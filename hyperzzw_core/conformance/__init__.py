"""The conformance kit: golden vectors, ``hyperzzw verify`` and a pytest plugin.

An implementation under test is any module or object exposing operators with the reference's
names and signatures; see :mod:`hyperzzw_core.conformance.protocol` for the protocol.
"""

from .protocol import Implementation
from .runner import CaseResult, format_table, run

__all__ = ["Implementation", "CaseResult", "run", "format_table"]
