"""pytest plugin (``pytest11`` entry point ``hyperzzw``): one test per operator, case and dtype.

A third party writes one short test file::

    hyperzzw_impl = "my_pkg.my_module"          # or pass --hyperzzw-impl / set HYPERZZW_IMPL

    def test_hyperzzw(hyperzzw_case):
        hyperzzw_case.check()

or runs the packaged suite with one option and no file of their own::

    pytest --pyargs hyperzzw_core.conformance.suite --hyperzzw-impl my_pkg.my_module

Options: ``--hyperzzw-impl``, ``--hyperzzw-dtype {float64,float32,all}``, ``--hyperzzw-device``,
``--hyperzzw-ops a,b``, ``--hyperzzw-no-grad``. The plugin is loaded in every pytest session where
hyperzzw is installed, so it imports nothing heavy until a test asks for ``hyperzzw_case``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hyperzzw", "hyperzzw conformance")
    g.addoption(
        "--hyperzzw-impl",
        default=None,
        help="implementation under test: module, module:object or path/to/file.py (or HYPERZZW_IMPL)",
    )
    g.addoption("--hyperzzw-dtype", default="float64", choices=["float64", "float32", "all"])
    g.addoption("--hyperzzw-device", default=None, help="passed to the implementation's from_numpy")
    g.addoption("--hyperzzw-ops", default=None, help="comma-separated operator names")
    g.addoption("--hyperzzw-no-grad", action="store_true", help="forward values only")


@dataclass
class ConformanceCase:
    """One golden case in one dtype, for one implementation; ``check()`` asserts it."""

    impl: Any
    case: Any
    dtype: str
    gradients: bool

    @property
    def id(self) -> str:
        return f"{self.case.op}-{self.case.label}-{self.dtype}"

    def check(self) -> None:
        from .runner import run_case

        results = run_case(self.impl, self.case, self.dtype, self.gradients)
        bad = [r for r in results if r.status != "pass"]
        if bad:
            raise AssertionError("\n".join(f"{r.status.upper()} {r.id}: {r.message}" for r in bad))


def _target(metafunc: pytest.Metafunc) -> str | None:
    return (
        metafunc.config.getoption("--hyperzzw-impl")
        or os.environ.get("HYPERZZW_IMPL")
        or getattr(metafunc.module, "hyperzzw_impl", None)
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hyperzzw_case" not in metafunc.fixturenames:
        return
    target = _target(metafunc)
    if not target:
        metafunc.parametrize(
            "hyperzzw_case",
            [
                pytest.param(
                    None,
                    marks=pytest.mark.skip(
                        reason="no implementation under test: pass --hyperzzw-impl, set HYPERZZW_IMPL, or define "
                        "hyperzzw_impl in the test module"
                    ),
                )
            ],
        )
        return
    from .protocol import Implementation
    from .runner import DTYPES, planned_cases

    opt = metafunc.config.getoption
    impl = Implementation(target, device=opt("--hyperzzw-device"))
    dtypes = list(DTYPES) if opt("--hyperzzw-dtype") == "all" else [opt("--hyperzzw-dtype")]
    ops = opt("--hyperzzw-ops")
    from .goldens import KitError

    try:
        cases = planned_cases(impl, ops.split(",") if ops else None)
    except (KitError, ValueError) as exc:  # one clear line, not a collection traceback
        raise pytest.UsageError(f"hyperzzw conformance: {exc}") from None
    params: list[Any] = [ConformanceCase(impl, c, d, not opt("--hyperzzw-no-grad")) for c in cases for d in dtypes]
    if not params:
        params = [pytest.param(None, marks=pytest.mark.skip(reason=f"{target} exposes no operator of the kit"))]
        metafunc.parametrize("hyperzzw_case", params)
        return
    metafunc.parametrize("hyperzzw_case", params, ids=[p.id for p in params])
