"""The repository's docs stand alone: nothing cites a document outside the repository.

Design citations point at ``docs/design/<file>.md`` and resolve to an existing heading
(``§6.2``) or to a section holding a numbered list (``§4.3 rule 1``, ``§10 test 10``);
nothing cites a bare ``family.md``, ``shared/spec/...``, an issue number or a branch name;
relative links inside ``docs/`` resolve; ``python -m pydoc linattn`` is clean too.
``tools/cite_map.py`` rewrites old-style citations mechanically.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design"
SCANNED = ("python", "src", "tests", "benchmarks", "docs", "notebooks", "tools", "README.md")
TEXT_SUFFIXES = {".py", ".pyi", ".c", ".h", ".md", ".rst", ".txt", ".ipynb", ".toml", ".cfg",
                 ".csv", ".sh", ".cmake", ".in", ""}
# The two files that must spell out the patterns they look for.
SELF = {"tests/test_docs_standalone.py", "tools/cite_map.py"}
DESIGN_NAMES = ("family", "kinds", "api", "lavo", "lara", "peers", "style", "performance",
                "grad", "dask")

OUTSIDE = [
    ("bare design file (write docs/design/<file>.md)",
     re.compile(r"(?<![\w/.-])(?:" + "|".join(DESIGN_NAMES) + r"|lavo-paper)\.md\b")),
    ("spec path", re.compile(r"shared/spec|\.\./shared\b")),
    ("issue number", re.compile(r"\b[Ii]ssues?\s+#?\d+\b")),
    ("branch name", re.compile(r"`[\w./-]+`\s+branch\b|\bbranch\s+`[\w./-]+`")),
]
CITATION = re.compile(r"docs/design/(?P<file>[\w-]+)\.md(?:,?\s+(?:§\s?|sections?\s+)"
                      r"(?P<num>\d+(?:\.\d+)*))?")
HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
MD_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(?:#[^)]*)?\)")


def _tracked() -> list[pathlib.Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *SCANNED], cwd=ROOT,
                             capture_output=True, check=True).stdout
        rels = [r for r in out.decode().split("\0") if r]
    except (OSError, subprocess.CalledProcessError):
        rels = []
        for top in SCANNED:
            p = ROOT / top
            rels += [str(f.relative_to(ROOT)) for f in ([p] if p.is_file() else p.rglob("*"))
                     if f.is_file()]
    files = []
    for rel in rels:
        path = ROOT / rel
        if rel in SELF or path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        files.append(path)
    return files


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _headings(name: str) -> set[str]:
    path = DESIGN / f"{name}.md"
    return set(HEADING.findall(path.read_text(encoding="utf-8"))) if path.exists() else set()


def _outside_refs(text: str, *, in_design: bool = False) -> list[tuple[int, str, str]]:
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        for what, pat in OUTSIDE:
            if in_design and what.startswith("bare design file"):
                continue  # sibling links inside docs/design/ are in-repo references
            if pat.search(line):
                found.append((i, what, line.strip()[:110]))
                break
    return found


def test_design_docs_exist_with_numbered_sections():
    for name in DESIGN_NAMES:
        if name == "api":  # the contract's sections are named (cited as "api.md, Errors")
            text = (DESIGN / "api.md").read_text(encoding="utf-8")
            assert "## Errors" in text and "## State" in text
            continue
        assert _headings(name), f"docs/design/{name}.md is missing or has no numbered section"
    assert (DESIGN / "README.md").exists()


def test_no_citation_of_documents_outside_the_repository():
    offenders = []
    for path in _tracked():
        text = _read(path)
        if text is None:
            continue
        in_design = DESIGN in path.parents
        offenders += [f"{_rel(path)}:{line}: {what}: {excerpt}"
                      for line, what, excerpt in _outside_refs(text, in_design=in_design)]
    assert not offenders, ("citations of documents outside the repository "
                           "(rewrite with tools/cite_map.py):\n" + "\n".join(offenders))


def test_design_citations_resolve_to_a_heading():
    bad = []
    for path in _tracked():
        text = _read(path)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for m in CITATION.finditer(line):
                name, num = m.group("file"), m.group("num")
                if not (DESIGN / f"{name}.md").exists():
                    bad.append(f"{_rel(path)}:{i}: no file docs/design/{name}.md")
                elif num and num not in _headings(name):
                    bad.append(f"{_rel(path)}:{i}: docs/design/{name}.md has no section {num}")
    assert not bad, "unresolved design citations:\n" + "\n".join(bad)


def test_relative_links_in_docs_resolve():
    bad = []
    for path in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in MD_LINK.findall(line):
                if not (path.parent / target).exists():
                    bad.append(f"{_rel(path)}:{i}: broken link {target}")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_each_kind_of_outside_reference():
    # Negative controls: the patterns above must fire on each form they are meant for.
    for line in ("see family.md 6.2", "(kinds.md, performer)", "shared/spec/lara.md",
                 "../shared/spec", "Bad inputs (issue 8)", "see issue #16",
                 "added by the `kind-decay` branch", "lavo-paper.md §2"):
        assert _outside_refs(line), line
    for line in ("docs/design/family.md §6.2", "performer-pytorch#82", "an issue tracker",
                 "LAVO needs at least one branch"):
        assert not _outside_refs(line), line
    assert CITATION.search("docs/design/family.md §4.3 rule 1").group("num") == "4.3"
    assert CITATION.search("docs/design/kinds.md section 7.2").group("num") == "7.2"


def test_pydoc_linattn_has_no_outside_reference():
    pytest.importorskip("linattn")
    env = dict(os.environ, PAGER="cat", COLUMNS="100")
    out = subprocess.run([sys.executable, "-m", "pydoc", "linattn"], capture_output=True,
                         text=True, env=env, cwd=ROOT / "tests", check=True).stdout
    assert "causal" in out  # the package's functions are documented in this output
    offenders = [f"pydoc linattn:{line}: {what}: {excerpt}"
                 for line, what, excerpt in _outside_refs(out)]
    assert not offenders, "\n".join(offenders)


def test_cite_map_rewrites_old_style_citations():
    path = ROOT / "tools" / "cite_map.py"
    if not path.exists():
        pytest.skip("tools/ is not part of this tree")
    spec = importlib.util.spec_from_file_location("cite_map", path)
    cm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cm)
    cases = {
        "(family.md 6.2)": "(docs/design/family.md §6.2)",
        "family.md section 9": "docs/design/family.md §9",
        "family.md 4.3 rule 1": "docs/design/family.md §4.3 rule 1",
        "(family.md 10.10)": "(docs/design/family.md §10 test 10)",
        "kinds.md 7.2": "docs/design/kinds.md §7.2",
        "(shared/spec/lavo.md)": "(docs/design/lavo.md)",
        "Bad inputs (issue 8): x": "Bad inputs: x",
        "(issue 8; family.md sections 8-10)": "(docs/design/family.md §8-10)",
        "(api.md, Errors)": "(docs/design/api.md, Errors)",
        "docs/design/family.md §6.2": "docs/design/family.md §6.2",
    }
    for old, new in cases.items():
        assert cm.rewrite(old) == new, (old, cm.rewrite(old))
        assert not _outside_refs(new), new
    assert cm.rewrite("(kinds.md 5.3)", ascii_only=True) == "(docs/design/kinds.md section 5.3)"
