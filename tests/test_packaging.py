"""What a user of the installed package sees: version, metadata, build configuration, the
vendored OpenBLAS, and (from a source checkout) an sdist that carries everything."""

from __future__ import annotations

import os
import platform
import re
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import linattn as la

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_distribution_version():
    assert la.__version__ == metadata.version("linattn")
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-]?\w+)*", la.__version__), la.__version__


def test_metadata_license_classifiers_urls():
    md = metadata.metadata("linattn")
    assert md["License-Expression"] == "MIT"
    files = metadata.files("linattn") or []
    assert any(f.name == "LICENSE" for f in files), "LICENSE missing from the dist-info"
    classifiers = md.get_all("Classifier")
    for v in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {v}" in classifiers
    assert any(c.startswith("Operating System ::") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    assert md["Requires-Python"] == ">=3.10"
    # OpenBLAS comes vendored; scipy-openblas32 is a build requirement only
    assert not any("scipy-openblas" in r for r in md.get_all("Requires-Dist") or [])


def test_info_reports_the_build_configuration():
    i = la.info()
    for key in ("compiler", "build_type", "c_flags", "isa_compiled", "blas_mode",
                "openblas_version", "openmp_version"):
        assert key in i, key
    assert i["compiler"] != "unknown" and i["compiler"].split()[0]
    # installed binaries target the baseline ISA; faster paths are dispatched at run time
    assert "-march=native" not in i["c_flags"] and "-mavx" not in i["c_flags"]
    assert i["isa_compiled"]
    if i["blas_mode"] == "wheel":
        assert re.fullmatch(r"\d+\.\d+\.\d+", i["openblas_version"])
        assert i["openblas_version"] in i["blas_config"]
    if platform.machine() == "x86_64" and sys.platform == "linux":
        # the baseline and at least one faster path, dispatched at run time
        assert len(i["isa_compiled"].split(", ")) >= 2, i["isa_compiled"]


def test_build_info_module_matches_version():
    from linattn import _build_info

    assert _build_info.version in ("", la.__version__)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_the_loaded_openblas_is_the_vendored_copy():
    if la.info()["blas_mode"] != "wheel":
        pytest.skip("built against a system OpenBLAS")
    q = np.ones((1, 64, 4), np.float32)
    la.causal(q, q, q, kind="elu", mode="chunked")
    pkg = os.path.realpath(os.path.dirname(la.__file__))
    with open("/proc/self/maps") as f:
        libs = {os.path.realpath(line.split()[-1]) for line in f
                if "libscipy_openblas" in line.split()[-1]}
    mine = [p for p in libs if os.path.dirname(p) == pkg]
    assert mine, f"linattn's OpenBLAS not mapped from {pkg}: {sorted(libs)}"


SDIST_MUST_HAVE = [
    "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "CMakeLists.txt",
    "src/_linattn/module.c", "src/_linattn/la_common.h", "tests/conftest.py",
    "tests/test_packaging.py", "python/linattn/__init__.py", "python/linattn/__main__.py",
]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_sdist_carries_sources_tests_notebooks(tmp_path, monkeypatch):
    build = pytest.importorskip("scikit_build_core.build")
    monkeypatch.chdir(ROOT)
    name = build.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = [m for m in SDIST_MUST_HAVE if m not in names]
    assert not missing, missing
    for pattern in ("src/_linattn/kernels/*.c", "src/_linattn/glue/*.c", "tests/c/*.c",
                    "notebooks/*.ipynb"):
        here = {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)}
        assert here and here <= names, sorted(here - names)
    assert not any(n.startswith((".venv", "build/", "dist/")) for n in names)
