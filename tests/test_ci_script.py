"""The CI script and the packaging scripts parse, and every stage builds in an environment
the script makes itself (so `bash .ci/run` works from an activated venv too).  Structure
only: the CI run itself is never started from the suite."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"
SCRIPTS = [CI, ROOT / "tools" / "build_wheels.sh", ROOT / "tools" / "install_test.sh",
           ROOT / "tools" / "sdist_test.sh", ROOT / "tools" / "_common.sh"]

pytestmark = pytest.mark.skipif(not CI.exists(), reason="needs the source tree")


def ci_lines():
    """The script's commands, one per entry (backslash continuations joined, comments out)."""
    text = re.sub(r"\\\n\s*", " ", CI.read_text(encoding="utf-8"))
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = script.read_text(encoding="utf-8")
    if script.name != "_common.sh":
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text


def test_no_stage_borrows_the_running_interpreters_packages():
    text = "\n".join(ci_lines())
    # --system-site-packages from inside a venv gives the base interpreter's packages,
    # not the venv's: the ASan stage once failed that way
    assert "--system-site-packages" not in text
    assert "--no-build-isolation" not in text


def test_each_venv_is_created_fresh_before_it_is_used():
    lines = ci_lines()
    created = {}
    for i, ln in enumerate(lines):
        m = re.search(r"-m venv --clear (build/[\w.-]+)", ln)
        if m:
            created.setdefault(m.group(1), i)
    assert {"build/asan-venv", "build/ci-cmake-venv"} <= set(created)
    for i, ln in enumerate(lines):
        for m in re.finditer(r"(build/[\w.-]+)/bin/python", ln):
            venv = m.group(1)
            assert venv in created and created[venv] < i, (venv, ln)


def test_cmake_configures_use_the_ci_venv_for_scipy_openblas():
    configures = [ln for ln in ci_lines() if ln.startswith("cmake -S")]
    assert configures
    for ln in configures:
        assert "CMAKE_PY" in ln, ln
    text = "\n".join(ci_lines())
    assert re.search(r'ci-cmake-venv/bin/python -m pip install -q "\$SOB"', text)


def test_asan_stage_installs_the_test_extras_with_sanitizer_flags():
    text = " ".join(ci_lines())
    m = re.search(r"build/asan-venv/bin/python -m pip install (.*?)\"\.\[test\]\"", text)
    assert m, "the ASan venv must install the package with its test extras"
    assert "LINATTN_SANITIZE=ON" in m.group(1)


def test_ci_runs_the_readme_command_and_the_wheel_install_test():
    text = CI.read_text(encoding="utf-8")
    # `set -e` does not stop on a failure left of `&&`: the line must fail the script itself
    assert 'python -m pip install ".[test]" && python -m pytest -q tests || exit 1' in text
    assert "tools/build_wheels.sh --python" in text
    assert "tools/install_test.sh" in text


def test_install_test_hides_compilers():
    text = (ROOT / "tools" / "install_test.sh").read_text(encoding="utf-8")
    assert "CC=/nonexistent" in text
    for tool in ("gcc", "cc", "cmake"):
        assert re.search(rf"for c in [^\n]*\b{tool}\b", text), tool
    assert "--only-binary :all:" in text and "/proc/self/maps" in text
