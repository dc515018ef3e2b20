"""The notebooks in notebooks/ run top to bottom (small sizes: LINATTN_NB_SMALL=1).

Each runs in a fresh "python3" kernel from ipykernel (the kernel spec ipykernel ships in
this environment, so the kernel uses this interpreter and this linattn); the suite skips
with a reason when nbclient, nbformat or ipykernel are not installed (``pip install
"linattn[test]"``).  Notebooks are stored without outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["quickstart", "approximation", "streaming", "speed"]
CELL_TIMEOUT = 120


def _runner():
    missing = []
    for mod in ("nbclient", "nbformat", "ipykernel", "matplotlib"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        pytest.skip(f"notebook tests need {', '.join(missing)} "
                    f"(pip install \"linattn[test]\")")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel spec (ipykernel installs one)")
    return spec


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, name
    src = "".join("".join(c["source"]) for c in nb["cells"])
    assert "LINATTN_NB_SMALL" in src


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, monkeypatch, tmp_path):
    _runner()
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LINATTN_NB_SMALL", "1")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    _use_this_interpreter(client)
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def _use_this_interpreter(client) -> None:
    """Start the kernel with sys.executable: a spec's argv[0] may be a bare "python",
    which would find whatever interpreter comes first on PATH."""
    km = client.create_kernel_manager()
    spec = km.kernel_spec
    if spec is not None and spec.argv and os.path.basename(spec.argv[0]).startswith("python"):
        spec.argv = [sys.executable, *spec.argv[1:]]
