"""benchmarks/train.py --quick: small models train through linattn.torch and the loss
falls (tiny tasks, 80 steps; the full run is benchmarks/train.py without --quick)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

TRAIN = Path(__file__).resolve().parent.parent / "benchmarks" / "train.py"


def _train():
    spec = importlib.util.spec_from_file_location("linattn_bench_train", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tasks_are_well_formed():
    import numpy as np

    t = _train()
    rng = np.random.default_rng(0)
    x, y = t.mqar_batch(rng, 4, n_kv=4, n_q=6, vocab=32)
    for b in range(4):
        pairs = dict(zip(x[b, 0:8:2], x[b, 1:8:2]))
        assert all(y[b, 8 + i] == pairs[x[b, 8 + i]] for i in range(6))
        assert (y[b, :8] == t.IGNORE).all()
    x, y = t.selcopy_batch(rng, 4, n_data=3, length=10, vocab=12)
    for b in range(4):
        data = x[b, :10][x[b, :10] > 1]
        assert list(y[b, 10:]) == list(data) and (x[b, 10:] == 1).all()


def test_quick_training_loss_falls(capsys):
    t = _train()
    kinds = ["softmax", "elu", "sscan"]
    results, skipped, md = t.run(kinds=kinds, quick=True, progress=lambda s: None)
    assert {r["kind"] for r in results} | set(skipped) == set(kinds)
    assert {"softmax", "sscan"} <= {r["kind"] for r in results}
    for r in results:
        assert t.loss_fell(r), (r["task"], r["kind"], r["losses"][:10], r["losses"][-10:])
    assert "| softmax |" in md and "mqar acc" in md


def test_training_notebook_runs_small(tmp_path, monkeypatch):
    """notebooks/training.ipynb (stored with the outputs of its full run) runs top to
    bottom with LINATTN_NB_SMALL=1 (quick sizes, three kinds)."""
    for mod in ("nbclient", "nbformat", "ipykernel", "matplotlib"):
        pytest.importorskip(mod)
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel spec (ipykernel installs one)")
    path = TRAIN.parent.parent / "notebooks" / "training.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "training.ipynb is stored with the outputs of its full run"
    monkeypatch.setenv("LINATTN_NB_SMALL", "1")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "accuracy" in text
