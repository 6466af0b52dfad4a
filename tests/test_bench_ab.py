"""``bench ab``: the revision side really runs the revision's code, and bad revisions are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hyperzzw_core
from hyperzzw_core.benchmarks import ab

REPO = Path(__file__).resolve().parents[1]


def _is_git_checkout() -> bool:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _is_git_checkout(), reason="needs the git checkout (bench ab exports a revision)")


def test_unknown_revision_is_refused_by_name() -> None:
    with pytest.raises(ab.ABError, match="--rev 'no-such-rev-xyz' is not a commit"):
        ab.resolve(REPO, "no-such-rev-xyz")


def test_cli_refuses_missing_rev_and_bad_rounds() -> None:
    for argv, msg in (
        (["ab"], "--rev REV is required"),
        (["ab", "--rev", "HEAD", "--rounds", "0"], "--rounds must be a positive integer, got 0"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "hyperzzw_core.cli", "bench", *argv], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr


def test_each_side_imports_its_own_code(tmp_path: Path) -> None:
    commit = ab.resolve(REPO, "HEAD")
    site = ab.install_revision(REPO, commit, tmp_path)
    # The exported revision is a copy: its package lies under site/, not in this checkout.
    assert (site / "hyperzzw_core" / "__init__.py").is_file()
    rows = ab.compare((("forward", 1),), site, rounds=1, reps=1, config="tiny", log=lambda _msg: None)
    (row,) = rows
    assert Path(row["A"]["core_file"]).resolve() == (site / "hyperzzw_core" / "__init__.py").resolve()
    assert Path(row["B"]["core_file"]).resolve() == Path(hyperzzw_core.__file__).resolve()
    assert row["A"]["n"] == row["B"]["n"] == 1
