"""One import root: ``hyperzzw_core`` (with ``.reference`` and ``.adapters``), no top-level
``reference`` or ``adapters`` module, and ``py.typed`` shipped, for both ``pip install .`` and
``pip install -e .``.

Each test copies the repository (``git ls-files`` plus untracked, non-ignored files) to a temporary
directory, installs it with ``pip install --no-deps --no-build-isolation`` into a fresh venv and runs
that venv's Python from a neutral working directory.

The venv is created ``--without-pip`` and without the system site-packages; a ``.pth`` file puts the
*running* environment's site-packages after the venv's own, so pip and the build backend are the ones
the ``test`` extra installed (``setuptools>=77``, needed for the PEP 639 ``license`` string), whatever
the base interpreter has. Paths added by a ``.pth`` line are not scanned for ``.pth`` files, so the
running environment's own (editable) install of this package is not activated in the venv.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent(r"""
    import importlib.metadata as md
    import importlib.resources
    import importlib.util
    import json
    import os
    import sys

    import hyperzzw_core
    import hyperzzw_core.adapters
    import hyperzzw_core.reference
    from hyperzzw_core.reference import gelu, init_params, tiny

    dist = md.distribution("hyperzzw")
    files = [str(f).replace(os.sep, "/") for f in (dist.files or [])]
    top_level = (dist.read_text("top_level.txt") or "").split()
    typed = importlib.resources.files("hyperzzw_core").joinpath("py.typed")
    print(json.dumps({
        "prefix": sys.prefix,
        "dist_path": str(dist._path),
        "files": files,
        "top_level": top_level,
        "spec_reference": importlib.util.find_spec("reference") is not None,
        "spec_adapters": importlib.util.find_spec("adapters") is not None,
        "core_file": hyperzzw_core.__file__,
        "reference_file": hyperzzw_core.reference.__file__,
        "adapters_file": hyperzzw_core.adapters.__file__,
        "reference_name": hyperzzw_core.reference.__name__,
        "py_typed": typed.is_file(),
        "gelu_1": float(gelu(__import__("numpy").array([1.0]))[0]),
        "n_leaves": len(init_params(tiny(), 0)["blocks"]),
        "sys_modules_reference": "reference" in sys.modules or "adapters" in sys.modules,
    }))
""")


def _copy_repo(dest: Path) -> Path:
    """Copy tracked and untracked (non-ignored) files of the repository to ``dest``."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _install(tmp_path: Path, editable: bool) -> tuple[Path, dict]:
    repo = _copy_repo(tmp_path / "repo")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Every site directory of this interpreter: a venv made with --system-site-packages has numpy
    # and the rest in the base installation's site-packages, which site.getsitepackages() lists.
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])
    Path(venv_site, "outer_environment.pth").write_text("".join(f"{p}\n" for p in outer))
    target = ["-e", str(repo)] if editable else [str(repo)]
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--disable-pip-version-check",
            *target,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    neutral = tmp_path / "neutral"
    neutral.mkdir()
    script = neutral / "check_imports.py"
    script.write_text(CHECK)
    run = subprocess.run([str(python), str(script)], cwd=neutral, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return repo, json.loads(run.stdout.strip().splitlines()[-1])


def _common_checks(info: dict, venv_prefix: Path) -> None:
    # The distribution found first is the one just installed into the venv.
    assert Path(info["dist_path"]).is_relative_to(venv_prefix), info["dist_path"]
    assert Path(info["prefix"]) == venv_prefix
    assert info["top_level"] == ["hyperzzw_core"]
    # No top-level reference/ or adapters/ (the system site-packages might hold other packages,
    # so check the distribution's own files as well as the import system).
    for f in info["files"]:
        assert f.split("/")[0] not in ("reference", "adapters"), f
    assert not info["spec_reference"] and not info["spec_adapters"]
    assert not info["sys_modules_reference"]
    assert info["reference_name"] == "hyperzzw_core.reference"
    assert info["py_typed"]
    assert info["gelu_1"] == pytest.approx(0.8413447460685429, rel=1e-15)
    assert info["n_leaves"] == 4


def test_pip_install_regular(tmp_path):
    _, info = _install(tmp_path, editable=False)
    venv = tmp_path / "venv"
    _common_checks(info, venv)
    site = Path(info["dist_path"]).parent
    assert Path(info["reference_file"]) == site / "hyperzzw_core" / "reference" / "__init__.py"
    assert Path(info["adapters_file"]) == site / "hyperzzw_core" / "adapters" / "__init__.py"
    files = set(info["files"])
    assert "hyperzzw_core/py.typed" in files
    assert "hyperzzw_core/reference/__init__.py" in files and "hyperzzw_core/reference/_slow_net.py" in files
    assert "hyperzzw_core/adapters/__init__.py" in files
    assert not (site / "reference").exists() and not (site / "adapters").exists()


def test_pip_install_editable(tmp_path):
    repo, info = _install(tmp_path, editable=True)
    _common_checks(info, tmp_path / "venv")
    # The editable finder maps the three packages onto the copy's folders.
    assert Path(info["core_file"]) == repo / "hyperzzw_core" / "__init__.py"
    assert Path(info["reference_file"]) == repo / "reference" / "__init__.py"
    assert Path(info["adapters_file"]) == repo / "adapters" / "__init__.py"
    # The repository root itself is not put on sys.path (that would expose reference/ top-level).
    site = Path(info["dist_path"]).parent
    for pth in site.glob("*.pth"):
        for line in pth.read_text().splitlines():
            assert Path(line.strip()) != repo, f"{pth.name} adds the repository root to sys.path"
