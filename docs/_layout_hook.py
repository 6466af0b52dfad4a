"""MkDocs hook: lay the package out as it is installed, for mkdocstrings to read statically.

``pyproject.toml`` installs the folders ``reference/``, ``adapters/`` and ``benchmarks/`` as
sub-packages of ``hyperzzw_core`` (``[tool.setuptools.package-dir]``); griffe, reading the source
tree, cannot follow that mapping. Before the build this hook copies the sources into the installed
layout under ``build/api-layout`` (git-ignored; under a megabyte), which ``mkdocs.yml`` gives
griffe as its search path. Nothing is imported. (Symbolic links would not do: griffe resolves
them and then lists the real folder.)
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "build" / "api-layout"


def build_layout(root: Path = ROOT, layout: Path = LAYOUT) -> Path:
    """Mirror ``[tool.setuptools.package-dir]`` of ``root``'s pyproject under ``layout``."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(layout, ignore_errors=True)
    # parents before children, so that each package's folder exists before its sub-packages
    for name in sorted(package_dir, key=lambda n: n.count(".")):
        shutil.copytree(
            root / package_dir[name],
            layout.joinpath(*name.split(".")),
            ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.png", "*.json"),
        )
    return layout


def on_startup(command: str, dirty: bool) -> None:
    """MkDocs entry point: build the layout once, before any plugin reads its configuration.

    (Not ``on_config``: mkdocstrings reads its ``paths`` before a hook's ``on_config`` runs, so in a
    fresh clone, where ``build/`` does not exist yet, ``hyperzzw_core.adapters.torch`` could not be
    collected and the strict build failed; it passed only where an earlier build had left the folder.)
    """
    build_layout()
