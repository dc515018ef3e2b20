"""python -m linattn: demo and info exit 0 and print what the README shows."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "linattn", *args], capture_output=True,
                          text=True, timeout=300)


def test_info():
    r = run("info", "--kinds")
    assert r.returncode == 0, r.stderr
    for word in ("version", "blas", "blas_corename", "simd", "threads", "performer", "lavo",
                 "compiler", "isa_compiled", "openblas_version"):
        assert word in r.stdout


def test_demo_table(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "demo.png"
    r = run("demo", "--T", "128", "--png", str(png))
    assert r.returncode == 0, r.stderr
    assert "error vs softmax" in r.stdout
    assert png.exists() and png.stat().st_size > 1000 and str(png) in r.stdout
    import linattn as la

    for kind in la.kinds():
        assert f"\n{kind} " in r.stdout, kind


@pytest.mark.parametrize("cmd", [["--help"], ["demo", "--help"], ["info", "--help"]])
def test_help(cmd):
    r = run(*cmd)
    assert r.returncode == 0 and "usage" in r.stdout.lower()
