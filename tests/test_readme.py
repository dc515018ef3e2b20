"""The README's Python examples run as written (keep README true to the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("i", range(len(python_blocks())))
def test_readme_python_blocks_run(i, tmp_path, monkeypatch):
    block = python_blocks()[i]
    for extra, module in (("torch", "torch"), ("dask", "dask")):
        if f"linattn.{extra}" in block:  # the optional extras' examples
            pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md block {i}", "exec"), {})


def test_readme_commands_are_the_ci_commands():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    test_cmd = 'python -m pip install ".[test]" && python -m pytest -q tests'
    assert test_cmd in text and test_cmd in ci
    assert 'python -m pip install ".[plot]" && python -m linattn demo' in text
