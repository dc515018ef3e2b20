"""linattn.plot: each helper returns a Figure with the expected axes and artists, takes
ax=, is deterministic, and names the extra when matplotlib is missing."""

from __future__ import annotations

import csv
import io
import sys

import numpy as np
import pytest

import linattn as la

matplotlib = pytest.importorskip("matplotlib",
                                 reason="the plot extra (matplotlib) is not installed")
matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

T, D = 24, 8


@pytest.fixture
def qk():
    rng = np.random.default_rng(7)
    return 0.7 * rng.standard_normal((T, D)), 0.7 * rng.standard_normal((T, D))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40, metadata={"Software": None})
    return buf.getvalue()


def _images(fig):
    return [im.get_array() for a in fig.axes for im in a.images]


def _line_data(fig):
    return [np.asarray(ln.get_ydata(), dtype=float) for a in fig.axes for ln in a.lines]


# ----------------------------------------------------------------- attention_matrix

KINDS = [
    ("linear", {}), ("elu", {}), ("relu", {}), ("rfa", {"num_features": 32}),
    ("performer", {"num_features": 32}), ("transnormer", {}), ("lightning", {}),
    ("retnet", {}), ("mamba2", {"decay": np.full(T, -0.1)}), ("cosformer", {}),
    ("lavo", {"window": 4}),
]


@pytest.mark.parametrize("kind,kw", KINDS, ids=[k for k, _ in KINDS])
def test_attention_matrix_every_causal_kind(qk, kind, kw):
    q, k = qk
    fig = la.plot.attention_matrix(q, k, kind=kind, **kw)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # two panels + two colour bars
    imgs = _images(fig)
    assert len(imgs) == 2
    for img in imgs:
        assert img.shape == (T, T)
        assert np.ma.getmaskarray(img)[np.triu_indices(T, 1)].all()  # causal mask blank


@pytest.mark.parametrize("kind", ["ra", "lara", "performer", "cosformer", "elu"])
def test_attention_matrix_noncausal(qk, kind):
    q, k = qk
    fig = la.plot.attention_matrix(q, k[:16], kind=kind, causal=False, colorbar=False)
    assert len(fig.axes) == 2
    assert [im.shape for im in _images(fig)] == [(T, 16), (T, 16)]


def test_implied_attention_matches_the_kind(qk):
    q, k = qk
    rng = np.random.default_rng(1)
    v = rng.standard_normal((T, 5))
    for kind, kw in [("elu", {}), ("cosformer", {}), ("retnet", {}),
                     ("performer", {"num_features": 32, "seed": 3})]:
        A = la.plot.implied_attention(q, k, kind=kind, **kw)
        la.testing.assert_close(A @ v, la.causal(q, k, v, kind=kind, **kw), rtol=1e-10)
    A = la.plot.implied_attention(q, k, kind="elu")
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.triu(A, 1) == 0)
    # decays show: retnet's weights are lambda^(t-s) q_t.k_s scale
    g = la.decay_slopes(1, "retnet")[0]
    A = la.plot.implied_attention(q, k, kind="retnet")
    t, s = np.tril_indices(T)
    np.testing.assert_allclose(A[t, s], np.exp(g * (t - s)) * (q @ k.T)[t, s] / np.sqrt(D),
                               rtol=1e-9, atol=1e-12)


def test_implied_attention_lavo_is_mean_diagonal(qk):
    q, k = qk
    A = la.plot.implied_attention(q, k, kind="lavo", window=4)
    assert A.shape == (T, T)
    assert np.all(np.isfinite(A))
    # inside the window and without memory (bases of 0 rows) it is plain softmax attention
    A0 = la.plot.implied_attention(q, k, kind="lavo", window=T, bases=np.zeros((0, D)))
    np.testing.assert_allclose(A0.sum(axis=1), 1.0, rtol=1e-9)


def test_attention_matrix_ax_and_determinism(qk):
    q, k = qk
    fig = Figure()
    axs = fig.subplots(1, 2)
    out = la.plot.attention_matrix(q, k, kind="performer", ax=axs, colorbar=False)
    assert out is fig and len(fig.axes) == 2
    a = _images(la.plot.attention_matrix(q, k, kind="performer", seed=5))
    b = _images(la.plot.attention_matrix(q, k, kind="performer", seed=5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.ma.filled(x, 0), np.ma.filled(y, 0))
    assert _png(la.plot.attention_matrix(q, k, kind="cosformer")) == \
        _png(la.plot.attention_matrix(q, k, kind="cosformer"))


def test_attention_matrix_errors(qk):
    q, k = qk
    with pytest.raises(ValueError, match="causal=False"):
        la.plot.attention_matrix(q, k, kind="ra")
    with pytest.raises(ValueError, match="causal=True"):
        la.plot.attention_matrix(q, k, kind="retnet", causal=False)
    with pytest.raises(ValueError, match=r"one head of shape \(T, D\)"):
        la.plot.attention_matrix(q[None], k[None], kind="elu")
    fig = Figure()
    with pytest.raises(ValueError, match="2 panel"):
        la.plot.attention_matrix(q, k, kind="elu", ax=fig.subplots())
    with pytest.raises(TypeError, match="Axes"):
        la.plot.attention_matrix(q, k, kind="elu", ax="left")


# ----------------------------------------------------------------- approximation_error


def test_approximation_error(qk):
    q, k = qk
    kw = {"num_features": (8, 32), "scales": (0.5, 1.0, 2.0), "seeds": range(3)}
    fig = la.plot.approximation_error(q, k, kind="performer", **kw)
    (a,) = fig.axes
    assert len(a.lines) == 3 and len(a.collections) == 3  # a mean line and a band per scale
    assert a.get_xscale() == "log" and a.get_yscale() == "log"
    # the mean line is the mean of la.approximation_error over seeds
    v = np.random.default_rng(0).standard_normal(k.shape)
    r = la.approximation_error(2.0 * q, 2.0 * k, v, kind="performer", num_features=(8, 32),
                               seeds=(0, 1, 2))
    np.testing.assert_allclose(a.lines[2].get_ydata(), r["mean_output_error"], rtol=1e-12)
    again = la.plot.approximation_error(q, k, kind="performer", **kw)
    for x, y in zip(_line_data(fig), _line_data(again)):
        np.testing.assert_array_equal(x, y)


def test_approximation_error_rfa_ax_one_seed(qk):
    q, k = qk
    fig = Figure()
    ax = fig.subplots()
    out = la.plot.approximation_error(q, k, kind="rfa", num_features=(8, 16), scales=(1.0,),
                                      seeds=[0], ax=ax, metric="attention_error",
                                      progress=False)
    assert out is fig
    assert len(ax.lines) == 1 and len(ax.collections) == 0  # no band from one seed
    with pytest.raises(ValueError, match="metric"):
        la.plot.approximation_error(q, k, metric="rms")


# ----------------------------------------------------------------- state_norm


@pytest.mark.parametrize("kind,kw,n_lines", [
    ("elu", {}, 2 * 3),                      # ||S|| and ||z|| per head
    ("retnet", {}, 3),                       # ||S|| per head
    ("mamba2", {"decay": np.full((3, 60), -0.05)}, 3),
    ("cosformer", {}, 2 * 3),                # horizon=T filled in
    ("lavo", {"window": 8}, 2 * 3),          # LAVO's sums and value_sums
])
def test_state_norm(kind, kw, n_lines):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((3, 60, D)) for _ in range(3))
    fig = la.plot.state_norm(q, k, v, kind=kind, pieces=6, **kw)
    (a,) = fig.axes
    assert len(a.lines) == n_lines
    np.testing.assert_array_equal(a.lines[0].get_xdata(), np.arange(10, 61, 10))
    again = la.plot.state_norm(q, k, v, kind=kind, pieces=6, **kw)
    for x, y in zip(_line_data(fig), _line_data(again)):
        np.testing.assert_array_equal(x, y)


def test_state_norm_values_and_ax():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((40, D)) for _ in range(3))
    fig = Figure()
    ax = fig.subplots()
    assert la.plot.state_norm(q, k, v, kind="linear", pieces=[10, 30], ax=ax) is fig
    _, st = la.causal(q, k, v, kind="linear", return_state=True)
    np.testing.assert_allclose(ax.lines[0].get_ydata()[-1], np.linalg.norm(st.S), rtol=1e-10)
    with pytest.raises(ValueError, match="summing to T"):
        la.plot.state_norm(q, k, v, kind="linear", pieces=[10, 10])


# ----------------------------------------------------------------- decay_curves


@pytest.mark.parametrize("preset", ["tnl", "fla", "retnet"])
def test_decay_curves(preset):
    fig = la.plot.decay_curves(6, preset=preset, layer=1, num_layers=4, length=100)
    (a,) = fig.axes
    assert len(a.lines) == 6
    g = la.decay_slopes(6, preset, 1, 4)
    for h, ln in enumerate(a.lines):
        np.testing.assert_allclose(ln.get_ydata(), np.exp(g[h] * np.arange(101)))
    fig2 = Figure()
    ax = fig2.subplots()
    assert la.plot.decay_curves(2, ax=ax) is fig2 and len(ax.lines) == 2
    assert _png(la.plot.decay_curves(4)) == _png(la.plot.decay_curves(4))


# ----------------------------------------------------------------- crossover


def _bench_rows():
    rows = []
    for threads in (1, 2):
        for T_ in (64, 128, 256, 512, 1024):
            rows.append({"name": "softmax", "T": T_, "threads": threads,
                         "seconds": 1e-8 * T_ * T_ / threads})
            rows.append({"name": "elu", "T": T_, "threads": threads,
                         "seconds": 2e-6 * T_ / threads, "gflops": 1.0})
    return rows


def test_crossover_dicts_and_csv(tmp_path):
    rows = _bench_rows()
    fig = la.plot.crossover(rows, baseline="softmax")
    (a,) = fig.axes
    # 2 names x 2 thread counts, plus one crossover marker per non-baseline line
    assert len(a.lines) == 4 + 2
    assert a.get_xscale() == "log" and a.get_yscale() == "log"
    assert all(t.get_text() == "T=200" for t in a.texts)  # 2e-6 T = 1e-8 T^2
    path = tmp_path / "bench.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "T", "threads", "seconds", "gflops"])
        w.writeheader()
        w.writerows(rows)
    from_csv = la.plot.crossover(path, baseline="softmax")
    for x, y in zip(_line_data(fig), _line_data(from_csv)):
        np.testing.assert_allclose(x, y)
    with open(path, newline="") as f:
        one_thread = [r for r in csv.DictReader(f) if r["threads"] == "1"]
    fig2 = Figure()
    ax = fig2.subplots()
    assert la.plot.crossover(one_thread, ax=ax) is fig2
    assert len(ax.lines) == 2


def test_crossover_errors():
    with pytest.raises(ValueError, match="seconds"):
        la.plot.crossover([{"name": "a", "T": 1}])
    with pytest.raises(ValueError, match="baseline"):
        la.plot.crossover(_bench_rows(), baseline="flash")


# ----------------------------------------------------------------- missing matplotlib


def test_import_error_names_the_extra(monkeypatch, qk):
    q, k = qk
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    for call in (lambda: la.plot.attention_matrix(q, k, kind="elu"),
                 lambda: la.plot.decay_curves(4),
                 lambda: la.plot.crossover(_bench_rows()),
                 lambda: la.plot.state_norm(q, k, k, kind="elu", pieces=2),
                 lambda: la.plot.approximation_error(q, k, num_features=(8,), seeds=[0])):
        with pytest.raises(ImportError, match=r'pip install "linattn\[plot\]"'):
            call()


def test_import_linattn_does_not_import_matplotlib():
    import subprocess

    code = ("import sys; sys.modules['matplotlib'] = None; import linattn as la; "
            "assert hasattr(la, 'plot'); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# ----------------------------------------------------------------- progress helper


def test_progress_helper(monkeypatch):
    from linattn._progress import progress

    assert list(progress(range(3))) == [0, 1, 2]  # stderr is not a terminal under pytest
    assert list(progress(iter("ab"), enabled=False)) == ["a", "b"]
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert list(progress([1, 2], enabled=True)) == [1, 2]  # no tqdm: silent passthrough


def test_progress_bar_when_enabled(capsys):
    pytest.importorskip("tqdm")
    from linattn._progress import progress

    assert list(progress(range(4), desc="sweep", enabled=True)) == [0, 1, 2, 3]
    assert "sweep" in capsys.readouterr().err
