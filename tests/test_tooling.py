"""Lint and types stay clean: ruff and the type check (tools/typecheck.py) over the clean folders.

Each gate is also shown to fail: the same command over a temporary copy of the checkout with one
planted finding must report it, at its checkout path (so a gate that checks nothing, or maps the
paths wrongly, cannot pass). Every floor is clean now; CI (.ci/run) and the pre-commit hooks run
both gates over the whole tree (``ruff check .``, ``tools/typecheck.py`` without folders).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the folders (and files) that are clean of ruff findings and of type errors
LINT_CLEAN = ["reference", "hyperzzw_core", "adapters", "benchmarks", "tools", "tests", "docs/_layout_hook.py"]
TYPE_CLEAN = ["reference", "hyperzzw_core", "adapters", "benchmarks"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's sources and configuration with one ruff finding and one type error planted."""
    root = tmp_path_factory.mktemp("planted")
    for name in ("reference", "hyperzzw_core", "adapters", "benchmarks", "tools", "tests"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.png"))
    (root / "docs").mkdir()
    shutil.copy2(ROOT / "docs" / "_layout_hook.py", root / "docs")
    shutil.copy2(ROOT / "pyproject.toml", root)
    tree = root / "reference" / "_tree.py"
    tree.write_text(
        tree.read_text(encoding="utf-8") + "\n\ndef _planted() -> int:\n    import os\n    return 'not an int'\n",
        encoding="utf-8",
    )
    return root


def _typecheck_module() -> types.ModuleType:
    """tools/typecheck.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_typecheck", ROOT / "tools" / "typecheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ruff(root: Path) -> subprocess.CompletedProcess:
    return _run("-m", "ruff", "check", "--no-cache", "--output-format", "concise", *LINT_CLEAN, cwd=root)


def _typecheck(root: Path) -> subprocess.CompletedProcess:
    # the checkout's mypy cache: the libraries' analysis (torch, NumPy) is shared, our modules are rechecked
    return _run(
        str(ROOT / "tools" / "typecheck.py"), "--root", str(root), "--cache-dir", str(ROOT / ".mypy_cache"), *TYPE_CLEAN
    )


def test_every_installed_floor_is_type_clean() -> None:
    """Each folder that pyproject.toml installs (``[tool.setuptools.package-dir]``) is in TYPE_CLEAN,
    so a new floor cannot slip past the type-check test."""
    installed = {folder for _, folder in _typecheck_module().source_map(ROOT)}
    assert installed == {f + "/" for f in TYPE_CLEAN}, sorted(installed)


def test_ruff_finds_nothing_in_the_clean_folders() -> None:
    res = _ruff(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_reports_a_planted_unused_import(planted: Path) -> None:
    res = _ruff(planted)
    assert res.returncode == 1, res.stdout + res.stderr
    findings = [line for line in res.stdout.splitlines() if line.startswith("reference/")]
    assert len(findings) == 1 and "reference/_tree.py" in findings[0] and "F401" in findings[0], res.stdout


def test_the_type_check_finds_nothing_in_the_clean_folders() -> None:
    res = _typecheck(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"0 error(s) in {', '.join(TYPE_CLEAN)}" in res.stderr


def test_the_type_check_reports_a_planted_error_at_its_checkout_path(planted: Path) -> None:
    res = _typecheck(planted)
    assert res.returncode == 1, res.stdout + res.stderr
    errors = [line for line in res.stdout.splitlines() if ": error: " in line]
    # reported at reference/_tree.py (the checkout's path), not hyperzzw_core/reference/_tree.py
    assert len(errors) == 1 and errors[0].startswith("reference/_tree.py:") and "[return-value]" in errors[0], (
        res.stdout
    )
    assert f"1 error(s) in {', '.join(TYPE_CLEAN)}" in res.stderr


def test_the_type_check_fails_loudly_when_mypy_cannot_run(planted: Path, tmp_path: Path) -> None:
    """A blocking error (here: a module that does not parse) is exit status 2 with mypy's message,
    never a pass with zero errors."""
    broken = tmp_path / "broken"
    shutil.copytree(planted, broken)
    (broken / "reference" / "_tree.py").write_text("def broken(:\n", encoding="utf-8")
    res = _typecheck(broken)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "mypy failed" in res.stderr and "_tree.py" in res.stdout + res.stderr


def _format_check(root: Path) -> subprocess.CompletedProcess:
    return _run("-m", "ruff", "format", "--check", "--no-cache", *LINT_CLEAN, cwd=root)


def test_the_tree_is_formatted() -> None:
    res = _format_check(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_format_check_reports_the_planted_file(planted: Path) -> None:
    # the planted function's single-quoted string is not the formatter's style
    res = _format_check(planted)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "--> reference/_tree.py:" in res.stdout and "1 file would be reformatted" in res.stdout, res.stdout
