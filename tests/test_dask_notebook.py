"""notebooks/dask.ipynb runs top to bottom at small sizes (as tests/test_notebooks.py runs
the others), when dask is installed; stored without outputs like the others."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")

from test_notebooks import NOTEBOOKS, CELL_TIMEOUT, _runner, _use_this_interpreter  # noqa: E402


def test_dask_notebook_is_stored_without_outputs():
    nb = json.loads((NOTEBOOKS / "dask.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    assert "LINATTN_NB_SMALL" in "".join("".join(c["source"]) for c in nb["cells"])


def test_dask_notebook_runs(monkeypatch, tmp_path):
    _runner()
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LINATTN_NB_SMALL", "1")
    nb = nbformat.read(NOTEBOOKS / "dask.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    _use_this_interpreter(client)
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
