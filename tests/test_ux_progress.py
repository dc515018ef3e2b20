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

    def __init__(self, desc, total=None, file=None):
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


def test_plain_line_with_the_token_counter(monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "INTERVAL", 0.01)
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    monkeypatch.setattr(_progress, "_counter", lambda: (lambda: (3, 10)))
    buf = io.StringIO()
    with _progress.call_progress("la.causal('elu')", total=10, file=buf):
        time.sleep(0.1)
    text = buf.getvalue()
    assert "la.causal('elu'): 30% (3/10 tokens)" in text
    assert "done in" in text


def test_plain_line_without_a_counter(monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "INTERVAL", 0.01)
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    buf = io.StringIO()
    with _progress.call_progress("la.noncausal('lavo')", total=None, file=buf):
        time.sleep(0.05)
    assert "la.noncausal('lavo'): running" in buf.getvalue()


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
    with _progress.call_progress("la.causal('elu')", total=8, file=buf):
        time.sleep(0.1)
    assert "la.causal('elu')" in buf.getvalue() and tqdm is not None


# ------------------------------------------------- the kernels' token counter --

def _example(kind):
    from linattn import _registry as reg

    return reg.get(kind).example(seed=0, dtype=np.float64)


def _run_counted(monkeypatch, f, *args, **kw):
    """(expected tokens, tokens the kernels counted) for one call with progress=True."""
    from linattn import _core

    seen = {}

    class Quiet(_progress.call_progress):
        def __enter__(self):
            seen["total"] = self.total
            if self.total:
                _progress.start(self.total)
            return self

        def __exit__(self, *exc):
            seen["done"] = _core._progress()[0]

    monkeypatch.setattr(_progress, "call_progress", Quiet)
    f(*args, progress=True, **kw)
    return seen["total"], seen["done"]


def _cases():
    from linattn import _registry as reg

    for name in sorted(la.kinds()):
        spec = reg.get(name)
        for mode in spec.causal_modes:
            yield name, "causal", mode
        if spec.noncausal:
            yield name, "noncausal", None


@pytest.mark.parametrize("kind,entry,mode", list(_cases()))
def test_kernels_count_every_token(monkeypatch, kind, entry, mode):
    from linattn import _registry as reg

    kw = _example(kind)
    q, k, v = kw.pop("q"), kw.pop("k"), kw.pop("v")
    kw.pop("shared_kv", None)
    if entry == "causal":
        total, done = _run_counted(monkeypatch, la.causal, q, k, v, kind, mode=mode, **kw)
    else:
        if reg.get(kind).progress:
            k, v = k[..., :5, :], v[..., :5, :]  # cross-attention: S != T
        total, done = _run_counted(monkeypatch, la.noncausal, q, k, v, kind, **kw)
    if not reg.get(kind).progress:
        assert total is None  # elapsed time only
        return
    slices = int(np.prod(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])))
    per = q.shape[-2] + (k.shape[-2] if entry == "noncausal" else 0)
    assert total == slices * per
    assert done == total


def test_sequence_split_counts_each_token_once(monkeypatch):
    r = np.random.default_rng(1)
    q, k, v = (r.standard_normal((1, 1, 4096, 8)).astype(np.float32) for _ in range(3))
    with _two_threads():
        total, done = _run_counted(monkeypatch, la.causal, q, k, v, "elu", mode="chunked",
                                   chunk_size=16)
    assert total == done == 4096


class _two_threads:
    def __enter__(self):
        self.old = la.get_num_threads()
        la.set_num_threads(2)

    def __exit__(self, *exc):
        la.set_num_threads(self.old)
