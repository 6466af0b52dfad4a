"""Type-check the package with mypy, as it is installed, and report the errors at their source paths.

``pyproject.toml`` installs the folders ``reference/``, ``adapters/`` and ``benchmarks/`` as
sub-packages of ``hyperzzw_core`` (``[tool.setuptools.package-dir]``), which mypy cannot follow from
the source tree (it would see a top-level ``reference`` package besides ``hyperzzw_core``, or no
``hyperzzw_core.reference`` at all). So this script copies the sources into the installed layout
under ``build/typecheck-layout`` (git-ignored, the same mirror ``docs/_layout_hook.py`` builds for
the API reference), runs mypy over the whole package there with the ``[tool.mypy]`` settings of
``pyproject.toml``, and maps every reported path back to the checkout (``hyperzzw_core/reference/x.py``
→ ``reference/x.py``).

Usage (from anywhere; a fresh clone needs only ``pip install -e ".[test,train,lint]"``)::

    python tools/typecheck.py                                   # every floor
    python tools/typecheck.py reference hyperzzw_core benchmarks  # only errors in these folders count

The whole package is always analysed (imports across floors are followed); the folder arguments
select which errors are reported and make the exit status non-zero. Exit status: 0 when no error
lies in the selected folders, 1 otherwise, 2 when mypy itself fails (bad configuration, crash).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "build" / "typecheck-layout"
#: a mypy report line: path:line[:column]: severity: message
_LINE = re.compile(
    r"^(?P<path>[^:\s][^:]*\.pyi?)(?P<rest>:\d+(?::\d+)?: (?P<severity>error|note|warning): .*)$", re.MULTILINE
)


def _build_layout(root: Path, layout: Path) -> Path:
    """Mirror the installed layout of ``root`` under ``layout`` (``docs/_layout_hook.build_layout``)."""
    spec = importlib.util.spec_from_file_location("_layout_hook", root / "docs" / "_layout_hook.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    result: Path = hook.build_layout(root, layout)
    return result


def source_map(root: Path) -> list[tuple[str, str]]:
    """(installed prefix, source prefix) pairs, longest installed prefix first.

    From ``[tool.setuptools.package-dir]``: ``hyperzzw_core.reference = "reference"`` gives
    ``("hyperzzw_core/reference/", "reference/")``.
    """
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    pairs = [(name.replace(".", "/") + "/", folder.rstrip("/") + "/") for name, folder in package_dir.items()]
    return sorted(pairs, key=lambda p: -len(p[0]))


def to_source(path: str, pairs: list[tuple[str, str]]) -> str:
    """The checkout path of an installed-layout path (unchanged when no package prefix matches)."""
    for installed, source in pairs:
        if path.startswith(installed):
            return source + path[len(installed) :]
    return path


def selected(path: str, folders: list[str]) -> bool:
    """Whether the checkout path ``path`` lies in one of ``folders`` (all folders when empty)."""
    return not folders or any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def run(folders: list[str], root: Path = ROOT, cache_dir: Path | None = None) -> int:
    """Type-check ``root``'s package; print the errors inside ``folders``; return the exit status."""
    layout = _build_layout(root, root / LAYOUT.relative_to(ROOT))
    pairs = source_map(root)
    top = sorted({installed.split("/")[0] for installed, _ in pairs})
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(root / "pyproject.toml"),
        "--cache-dir",
        str(cache_dir or root / ".mypy_cache"),
        "--no-error-summary",
        "--show-column-numbers",
        "--hide-error-context",
        "--no-pretty",
    ]
    for name in top:
        cmd += ["-p", name]
    proc = subprocess.run(cmd, cwd=layout, capture_output=True, text=True, check=False)
    if proc.stderr:  # mypy's own warnings (e.g. on the configuration) are shown, never swallowed
        print(proc.stderr, file=sys.stderr, end="")
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not _LINE.search(proc.stdout)):
        print(proc.stdout, file=sys.stderr, end="")
        print(f"typecheck: mypy failed (exit status {proc.returncode})", file=sys.stderr)
        return 2
    errors = other = 0
    for line in proc.stdout.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        path = to_source(m["path"], pairs)
        if not selected(path, folders):
            other += m["severity"] == "error"
            continue
        errors += m["severity"] == "error"
        print(path + m["rest"])
    where = ", ".join(folders) if folders else "every floor"
    tail = f" ({other} more outside them)" if other else ""
    print(f"typecheck: {errors} error(s) in {where}{tail}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="checkout folders whose errors count (default: all)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="mypy's cache (default: ROOT/.mypy_cache)")
    args = parser.parse_args(argv)
    return run(args.folders, args.root.resolve(), args.cache_dir)


if __name__ == "__main__":
    sys.exit(main())
