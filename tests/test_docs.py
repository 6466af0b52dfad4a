"""Every Python example in the README runs as written (and its asserts hold)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("array_api_strict")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


# ----------------------------------------------------------------------------------------------
# The specification inside the repository: every "§" cited exists as a heading of docs/spec.md,
# and nothing points to the notes outside the repository any more.

ROOT = README.parent
SPEC = ROOT / "docs" / "spec.md"
# where citations live: the package's four floors, the tests, the README, the docs and the tooling
SCANNED_DIRS = ("hyperzzw_core", "reference", "adapters", "benchmarks", "tests", "docs")
SCANNED_FILES = ("README.md", "CONTRIBUTING.md", "mkdocs.yml", "pyproject.toml", ".ci/run")
# the section numbers of the notes the spec was written from, which every citation uses
EXPECTED_SECTIONS = (
    ["1", "2", "3", "4", "5", "B"]
    + [f"1.{i}" for i in range(1, 5)]
    + [f"2.{i}" for i in range(1, 16)]
    + [f"3.{i}" for i in range(1, 4)]
    + [f"4.{i}" for i in range(1, 4)]
    + [f"5 Q{i}" for i in range(1, 15)]
)

_CITATION = re.compile(
    r"§\s?(\d+(?:\.\d+)?|[A-E]\d*(?!\w))"  # §2.1, §2, §B
    r"(?:\s?[-–]\s?(\d+\.\d+))?"  # a range: §2.12-2.13
    r"((?:(?:\s|,\s?)Q\d+)*)"
)  # questions: §5 Q1, Q8
_HEADING = re.compile(r"^#{2,4}\s+(?:(\d+(?:\.\d+)?|[A-Z])\.?\s|Q(\d+)\.\s)")


def cited_sections(text: str) -> set[str]:
    """Every section a text cites, a range expanded to each section in it, "§5 Q1, Q8" to two."""
    found: set[str] = set()
    for start, end, questions in _CITATION.findall(text):
        qs = re.findall(r"Q(\d+)", questions)
        if qs:
            found.update(f"{start} Q{q}" for q in qs)
        elif end:
            major, lo = start.split(".")
            hi_major, hi = end.split(".")
            assert major == hi_major, f"a range across chapters: §{start}-{end}"
            found.update(f"{major}.{i}" for i in range(int(lo), int(hi) + 1))
        else:
            found.add(start)
    return found


def spec_sections(text: str) -> list[str]:
    """The section ids of the spec's headings: "## 2. …" → "2", "### 2.1 …" → "2.1",
    "### Q3. …" under "## 5. …" → "5 Q3"."""
    ids: list[str] = []
    chapter = None
    for line in text.splitlines():
        m = _HEADING.match(line)
        if not m:
            continue
        number, question = m.groups()
        if question is not None:
            ids.append(f"{chapter} Q{question}")
        else:
            ids.append(number)
            if line.startswith("## "):
                chapter = number
    return ids


def _scanned_files() -> list[Path]:
    files = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED_DIRS:
        files += [p for p in sorted((ROOT / d).rglob("*")) if p.suffix in (".py", ".md", ".yml")]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_citation_parser_on_known_forms():
    """The parser reads every form used in the code, and a made-up section is not in the spec."""
    text = '(§2.1) §2.12-2.13, §5 Q1, Q8; §5 Q10. §2 "Conventions" §2.9. spec §B): §2.2-2.4 and §1.3 step 12'
    assert cited_sections(text) == {
        "2.1",
        "2.12",
        "2.13",
        "5 Q1",
        "5 Q8",
        "5 Q10",
        "2",
        "2.9",
        "B",
        "2.2",
        "2.3",
        "2.4",
        "1.3",
    }
    headings = "## 5. Open\n### Q3. omega\n## 2. Operators\n### 2.10 Mixer\n#### not a section\n## B. Tests"
    assert spec_sections(headings) == ["5", "5 Q3", "2", "2.10", "B"]
    known = set(spec_sections(SPEC.read_text(encoding="utf-8")))
    assert cited_sections("§2.16, §5 Q15, §6 and §B5.") - known == {"2.16", "5 Q15", "6", "B5"}


def test_spec_keeps_the_notes_section_numbers():
    ids = spec_sections(SPEC.read_text(encoding="utf-8"))
    assert len(ids) == len(set(ids)), f"duplicate section headings in docs/spec.md: {ids}"
    missing = sorted(set(EXPECTED_SECTIONS) - set(ids))
    assert not missing, f"docs/spec.md lacks the sections {missing}"


def test_every_cited_section_exists_in_the_spec():
    known = set(spec_sections(SPEC.read_text(encoding="utf-8")))
    dangling = {}
    for path in _scanned_files():
        bad = cited_sections(path.read_text(encoding="utf-8")) - known
        if bad:
            dangling[str(path.relative_to(ROOT))] = sorted(bad)
    assert not dangling, f"sections cited but not headings of docs/spec.md: {dangling}"
    assert len(_scanned_files()) > 50  # the scan did reach the package


def test_registry_sections_exist_in_the_spec():
    """The sections the operator registry reports (they go into the goldens and `verify`)."""
    from hyperzzw_core.testing.registry import REGISTRY

    known = set(spec_sections(SPEC.read_text(encoding="utf-8")))
    sections = {spec.name: cited_sections(spec.section) for spec in REGISTRY.values()}
    assert all(sections.values()), f"operators without a section: {[n for n, s in sections.items() if not s]}"
    bad = {n: sorted(s - known) for n, s in sections.items() if s - known}
    assert not bad, f"registry sections missing from docs/spec.md: {bad}"


@pytest.mark.parametrize("floor", ["hyperzzw_core.reference", "hyperzzw_core"])
def test_operator_docstrings_cite_their_registry_section(floor):
    """Each operator's docstring, on the reference and the core floor, cites a section that the
    registry gives the operator (``OpSpec.section``, which goes into the goldens and `verify`).
    The two are written by hand in different files, so a docstring that points a reader at the
    wrong part of the spec shows up as a disagreement."""
    import importlib

    from hyperzzw_core.testing.registry import REGISTRY

    module = importlib.import_module(floor)
    wrong = {}
    for spec in REGISTRY.values():
        doc = getattr(module, spec.name).__doc__ or ""
        if not cited_sections(doc) & cited_sections(spec.section):
            wrong[spec.name] = (spec.section, sorted(cited_sections(doc)))
    assert not wrong, f"{floor}: docstring cites none of the registry's sections (registry, cited): {wrong}"
    assert len(REGISTRY) > 20


def test_nothing_points_outside_the_repository():
    outside = re.compile(r"shared/spec|paper-notes|engineering-notes", re.I)
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _scanned_files()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, f"references to the notes outside the repository (use docs/spec.md): {hits}"


# ----------------------------------------------------------------------------------------------
# The API reference (mkdocs + mkdocstrings; `mkdocs build --strict` runs in .ci/run) lists every
# public name of the two namespaces whose members are re-exported, so it cannot fall behind them.


def _api_members(page: str, module: str) -> list[str]:
    """The names listed under ``members:`` of the ``::: module`` block of docs/api/<page>."""
    text = (ROOT / "docs" / "api" / page).read_text(encoding="utf-8")
    block = text.split(f"::: {module}\n", 1)[1].split("\n:::", 1)[0]
    return re.findall(r"^\s+- (\w+)\s*$", block, re.M)


def _public_names(module: object) -> set[str]:
    import types

    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    return {n for n in names if not isinstance(getattr(module, n), types.ModuleType)}


@pytest.mark.parametrize("page, module", [("reference.md", "hyperzzw_core.reference"), ("core.md", "hyperzzw_core")])
def test_api_page_lists_every_public_name(page, module):
    import importlib

    listed = _api_members(page, module)
    assert len(listed) == len(set(listed)), f"docs/api/{page}: names listed twice"
    public = _public_names(importlib.import_module(module))
    assert set(listed) == public, (
        f"docs/api/{page}: missing {sorted(public - set(listed))}, not public {sorted(set(listed) - public)}"
    )


def test_benchmark_report_embeds_the_current_fast_path_table_and_ab_report():
    """docs/benchmarks.md is rendered (``python -m benchmarks report``) around two hand-kept files:
    the fast-path table (benchmarks/fast_paths.md) and the latest A/B (docs/ab.md). An edit to
    either that was not re-rendered leaves the published report stale: fail until it is."""
    report = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for part in (ROOT / "benchmarks" / "fast_paths.md", ROOT / "docs" / "ab.md"):
        text = part.read_text(encoding="utf-8").strip()
        assert text in report, f"docs/benchmarks.md does not embed the current {part.relative_to(ROOT)}: re-render it"
