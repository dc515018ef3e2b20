#!/usr/bin/env python3
"""Rewrite citations of design documents outside the repository into ``docs/design/`` ones.

The design documents live in ``docs/design/<name>.md`` with stable section numbers.  Older
comments cite them bare (``family.md 6.2``, ``(kinds.md 5.3)``, ``lara.md section 6``,
``shared/spec/lavo.md``) or cite issue numbers (``(issue 8)``).  This tool rewrites those
mechanically:

    family.md 6.2            -> docs/design/family.md §6.2
    family.md section 9      -> docs/design/family.md §9
    lavo.md sections 4-6     -> docs/design/lavo.md §4-6
    family.md 4.3 rule 1     -> docs/design/family.md §4.3 rule 1
    family.md 10.10          -> docs/design/family.md §10 test 10   (10.10 is not a heading)
    shared/spec/lara.md      -> docs/design/lara.md
    (lavo.md)                -> (docs/design/lavo.md)
    lavo-paper.md            -> docs/design/lavo.md §14
    (issue 8)                -> removed;  (issue 8; family.md 9) -> (docs/design/family.md §9)

It does not touch citations already prefixed by ``docs/design/``, and it does not guess
what a bare ``(5.3)`` after another citation refers to; ``--check`` lists what is left for a
human (branch names, issue numbers outside parentheses, bare section numbers).

Usage::

    python tools/cite_map.py FILE...            # show a diff, change nothing
    python tools/cite_map.py --write FILE...    # rewrite the files in place
    python tools/cite_map.py --check FILE...    # list remaining out-of-repo references
    python tools/cite_map.py --ascii ...        # write "section 6.2" instead of "§6.2"
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design"
NAMES = ("family", "kinds", "api", "lavo", "lara", "peers", "style", "performance", "grad",
         "dask")
# A numbered list inside a section: what its items are called when cited.
ITEM_WORD = {("family", "10"): "test", ("family", "4.3"): "rule"}

_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
_NUM = r"\d+(?:\.\d+)*"
# "family.md", not already preceded by "docs/design/" (or any other path component).
_BARE = r"(?<![\w/.-])(?<!\]\()(?:\.\./)*(?:shared/spec/)?(?P<name>" + "|".join(NAMES) + r")\.md"
_CITE = re.compile(
    _BARE
    + r"(?P<sec>(?:,?\s+(?:§\s?|sections?\s+)?(?P<num>" + _NUM + r")"
    + r"(?P<range>\s*[-–]\s*" + _NUM + r")?))?")
_SPEC_PATH = re.compile(r"(?:\.\./)*(?:/work/)?shared/spec/(?P<name>[\w-]+)\.md")
_PAPER = re.compile(r"(?<![\w/.-])lavo-paper\.md")
_ISSUE_PAREN = re.compile(r"\s*\(\s*[Ii]ssues?\s+#?\d+(?:\s*(?:,|and)\s*#?\d+)*\s*\)")
_ISSUE_LEAD = re.compile(r"\(\s*[Ii]ssues?\s+#?\d+(?:\s*(?:,|and)\s*#?\d+)*\s*[;,]\s*")

# What --check (and tests/test_docs_standalone.py) still flags.
LEFTOVER = [
    ("bare design file", re.compile(r"(?<![\w/.-])(?:" + "|".join(NAMES)
                                    + r"|lavo-paper|style)\.md\b")),
    ("spec path", re.compile(r"shared/spec|\.\./shared\b")),
    ("issue number", re.compile(r"\b[Ii]ssues?\s+#?\d+\b")),
    ("branch name", re.compile(r"`[\w./-]+`\s+branch\b|\bbranch\s+`[\w./-]+`")),
]


def headings(name: str) -> set[str]:
    """Section numbers of ``docs/design/<name>.md`` (empty when the file is absent)."""
    path = DESIGN / f"{name}.md"
    return set(_HEADING.findall(path.read_text(encoding="utf-8"))) if path.exists() else set()


def _section(name: str, num: str, sign: str) -> str:
    """``§6.2`` when 6.2 is a heading; ``§10 test 10`` when only 10 is; else ``§num``."""
    known = headings(name)
    if num in known or "." not in num:
        return f"{sign}{num}"
    head, item = num.rsplit(".", 1)
    if head in known:
        word = ITEM_WORD.get((name, head), "item")
        return f"{sign}{head} {word} {item}"
    return f"{sign}{num}"


def rewrite(text: str, *, ascii_only: bool = False) -> str:
    sign = "section " if ascii_only else "§"

    def cite(m: re.Match) -> str:
        name = m.group("name")
        out = f"docs/design/{name}.md"
        if m.group("num"):
            sec = _section(name, m.group("num"), sign)
            rng = re.sub(r"\s*[-–]\s*", "-", m.group("range") or "")
            sep = ", " if m.group("sec").lstrip().startswith(",") else " "
            out += f"{sep}{sec}{rng}"
        return out

    text = _ISSUE_LEAD.sub("(", text)
    text = _ISSUE_PAREN.sub("", text)
    text = _PAPER.sub(f"docs/design/lavo.md {sign}14", text)
    text = _SPEC_PATH.sub(lambda m: f"docs/design/{m.group('name')}.md", text)
    return _CITE.sub(cite, text)


def leftovers(text: str) -> list[tuple[int, str, str]]:
    """``(line, kind, excerpt)`` for every out-of-repo reference still in ``text``."""
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        for kind, pat in LEFTOVER:
            m = pat.search(line)
            if m:
                found.append((i, kind, line.strip()[:120]))
                break
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=pathlib.Path)
    ap.add_argument("--write", action="store_true", help="rewrite the files in place")
    ap.add_argument("--check", action="store_true", help="list remaining references")
    ap.add_argument("--ascii", action="store_true", help='write "section N" instead of "§N"')
    args = ap.parse_args(argv)
    status = 0
    for path in args.files:
        if DESIGN in path.resolve().parents:
            continue  # the design documents link their siblings by bare name, on purpose
        old = path.read_text(encoding="utf-8")
        if args.check:
            for line, kind, excerpt in leftovers(old):
                print(f"{path}:{line}: {kind}: {excerpt}")
                status = 1
            continue
        new = rewrite(old, ascii_only=args.ascii)
        if new == old:
            continue
        if args.write:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path}")
        else:
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), str(path), str(path)))
    return status


if __name__ == "__main__":
    sys.exit(main())
