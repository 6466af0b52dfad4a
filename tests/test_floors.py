"""The floors (reference <- core <- adapters <- conformance/train/CLI/benchmarks) as checked contracts.

* ``lint-imports`` (import-linter, ``[tool.importlinter]`` in pyproject.toml) on the package as it
  is installed, and on copies with one planted violation each: an upward import, a private module
  of the reference imported by the core, a private core module imported by an adapter. Each plant
  must break exactly the contract that forbids it, so the contract is shown to bite.
* ``import hyperzzw_core.reference`` in a fresh interpreter loads NumPy, SciPy, the standard library
  and the reference, nothing else (no core module, no array-api-compat, no torch).
* No second copy: ``import reference`` / ``import adapters`` from the checkout's root fail with a
  message that says how to import them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# import-linter's console script, run by this interpreter: the script itself need not lie beside
# sys.executable (a venv made with --system-site-packages finds the package but not the script).
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
]


def _stage(dest: Path) -> Path:
    """Copy the package's Python files into ``dest`` in the installed layout (package-dir mapping)."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):  # parents before children
        shutil.copytree(
            ROOT / folder,
            dest / package.replace(".", "/"),
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.json", "*.md", "py.typed"),
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(staged: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(staged), "COLUMNS": "400"}  # no wrapped lines
    return subprocess.run(
        [*LINT_IMPORTS, "pyproject.toml", "--no-cache"],
        cwd=staged,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _plant(staged: Path, module: str, line: str) -> None:
    path = staged / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = staged / module.replace(".", "/") / "__init__.py"
    text = path.read_text(encoding="utf-8")
    path.write_text(text + f"\n{line}  # planted\n", encoding="utf-8")


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    result = _lint(_stage(tmp_path))
    out = result.stdout + result.stderr
    n = len(PYPROJECT["tool"]["importlinter"]["contracts"])
    assert result.returncode == 0, out
    assert f"Contracts: {n} kept, 0 broken." in out, out


PLANTS = {
    # an upward import: the reference importing the core
    "reference->core": ("hyperzzw_core.reference._conv", "from .. import _backend", "Floors"),
    # an upward import: the core importing an adapter
    "core->adapters": ("hyperzzw_core._losses", "from .adapters import cupy", "Floors"),
    # the core calling a private function of the reference
    "core->reference private": (
        "hyperzzw_core._losses",
        "from .reference._losses import _pairs",
        "The reference is used through its public API only",
    ),
    # an adapter calling a private core module
    "adapter->core private": (
        "hyperzzw_core.adapters.cupy",
        "from .. import _block",
        "The adapters use the core's public names",
    ),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, plant: str) -> None:
    module, line, contract = PLANTS[plant]
    staged = _stage(tmp_path)
    _plant(staged, module, line)
    result = _lint(staged)
    out = result.stdout + result.stderr
    n = len(PYPROJECT["tool"]["importlinter"]["contracts"])
    assert result.returncode != 0, f"lint-imports passed with {line!r} planted in {module}:\n{out}"
    assert f"Contracts: {n - 1} kept, 1 broken." in out, out
    assert f"{contract}" in out.split("Broken contracts", 1)[-1], out
    assert module in out.split("Broken contracts", 1)[-1], out


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_importing_the_reference_loads_numpy_scipy_and_the_reference_only(tmp_path: Path) -> None:
    code = (
        "import json, sys\nbefore = set(sys.modules)\nimport hyperzzw_core.reference\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = _run(code, tmp_path)  # not the checkout's root: the installed package
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    ours = [m for m in loaded if m.split(".")[0] == "hyperzzw_core"]
    assert ours and all(m == "hyperzzw_core" or m.startswith("hyperzzw_core.reference") for m in ours), ours
    # What NumPy's and SciPy's own modules load by themselves (numpy.f2py, for one, loads
    # charset_normalizer where it is installed) is theirs, not ours: import the same NumPy/SciPy
    # modules alone in a fresh process and allow what that loads.
    theirs = [m for m in loaded if m.split(".")[0] in ("numpy", "scipy")]
    base = _run(
        "import importlib, json, sys\nbefore = set(sys.modules)\n"
        f"for m in {theirs!r}:\n    importlib.import_module(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))",
        tmp_path,
    )
    assert base.returncode == 0, base.stderr
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "hyperzzw_core", "cython_runtime"}
    allowed |= {m.split(".")[0] for m in json.loads(base.stdout)}
    # private top-level names (_cython_3_x, _sysconfigdata_…) are runtime helpers NumPy/SciPy load
    others = sorted({m.split(".")[0] for m in loaded} - allowed - {m for m in loaded if m.startswith("_")})
    assert others == [], f"import hyperzzw_core.reference also loaded {others}"


@pytest.mark.parametrize(
    "name, proper", [("reference", "hyperzzw_core.reference"), ("adapters", "hyperzzw_core.adapters")]
)
def test_no_second_copy_is_importable_from_the_checkout_root(name: str, proper: str) -> None:
    result = _run(f"import {name}", ROOT)
    assert result.returncode != 0, f"import {name} succeeded from {ROOT}"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:") and f"importable only as '{proper}'" in last, result.stderr


def test_every_lazy_name_of_the_package_resolves_to_its_module() -> None:
    import hyperzzw_core
    from hyperzzw_core import reference

    for name in hyperzzw_core.__all__:
        value = getattr(hyperzzw_core, name)
        where = hyperzzw_core._LAZY[name]
        module = sys.modules["hyperzzw_core" + where]
        assert getattr(module, name) is value, name
    assert hyperzzw_core.TerminatorConfig is reference.TerminatorConfig
    with pytest.raises(AttributeError, match="no attribute 'no_such_operator'"):
        _ = hyperzzw_core.no_such_operator


def test_no_private_name_of_the_reference_is_reached_through_an_attribute() -> None:
    """What import-linter cannot see: ``R._name`` on the imported public namespace."""
    import re

    pattern = re.compile(r"(?<![`\w.])(R|_ref|reference)\._[A-Za-z]")  # not ``reference._x`` in prose
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    folders = [ROOT / f for p, f in mapping.items() if p != "hyperzzw_core.reference"]
    offenders = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for folder in folders
        for path in sorted(folder.rglob("*.py"))
        if "reference" not in path.relative_to(ROOT).parts[:1]
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == [], "\n".join(offenders)
