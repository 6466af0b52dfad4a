"""The packaged conformance suite: ``pytest --pyargs hyperzzw_core.conformance.suite --hyperzzw-impl X``."""


def test_conformance(hyperzzw_case):
    """One golden case of the implementation under test (see ``hyperzzw_core.conformance.plugin``)."""
    hyperzzw_case.check()
