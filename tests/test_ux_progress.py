"""progress=True on la.causal / la.noncausal: a bar for long calls (tqdm when installed,
a plain line otherwise), nothing for short ones, and nothing at all by default."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

import linattn as la
from linattn import _progress


def _qkv():
    r = np.random.default_rng(0)
    return (r.standard_normal((2, 3, 40, 4)) for _ in range(3))


class _Recorder:
    used: list = []

    def __init__(self, desc, file=None):
        self.desc = desc

    def __enter__(self):
        _Recorder.used.append(self.desc)
        return self

    def __exit__(self, *exc):
        return None


@pytest.mark.parametrize("entry", ["causal", "noncausal"])
def test_progress_keyword_is_wired(monkeypatch, entry):
    q, k, v = _qkv()
    f = getattr(la, entry)
    monkeypatch.setattr(_progress, "call_progress", _Recorder)
    _Recorder.used = []
    plain = f(q, k, v, "elu")
    assert _Recorder.used == []  # off by default
    np.testing.assert_array_equal(f(q, k, v, "elu", progress=True), plain)
    assert _Recorder.used == [f"la.{entry}('elu')"]


def test_plain_line_with_the_chunk_counter(monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "INTERVAL", 0.01)
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    monkeypatch.setattr(_progress, "_counter", lambda: (lambda: (3, 10)))
    buf = io.StringIO()
    with _progress.call_progress("la.causal('elu')", file=buf):
        time.sleep(0.1)
    text = buf.getvalue()
    assert "la.causal('elu'): 30% (3/10 chunks)" in text
    assert "done in" in text


def test_plain_line_without_a_counter(monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "INTERVAL", 0.01)
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    monkeypatch.setattr(_progress, "_counter", lambda: None)
    buf = io.StringIO()
    with _progress.call_progress("la.noncausal('elu')", file=buf):
        time.sleep(0.05)
    assert "la.noncausal('elu'): running" in buf.getvalue()


def test_short_calls_show_nothing(monkeypatch):
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    buf = io.StringIO()
    with _progress.call_progress("la.causal('elu')", file=buf):
        pass
    assert buf.getvalue() == ""


def test_tqdm_bar_when_installed(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "INTERVAL", 0.01)
    monkeypatch.setattr(_progress, "_counter", lambda: (lambda: (4, 8)))
    buf = io.StringIO()
    with _progress.call_progress("la.causal('elu')", file=buf):
        time.sleep(0.1)
    assert "la.causal('elu')" in buf.getvalue() and tqdm is not None
