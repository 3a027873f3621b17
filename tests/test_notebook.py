"""The shipped notebook runs end to end in a real Jupyter kernel (nbclient), as a user would run it."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_digits_sweep_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "project"))
    monkeypatch.setenv("MLORCH_NOTEBOOK_TRIALS", "4")
    monkeypatch.setenv("MLORCH_NOTEBOOK_SWEEP", "notebook-test")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLORCH_TRACKING", "on")
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "digits_sweep.ipynb"), as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}
    )
    client.execute()
    outputs = {
        i: "".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
    }
    everything = "\n".join(outputs.values())
    # Reads as a tutorial: a widget progress bar, no per-trial log lines, no library noise.
    sweep_cell = next(cell for cell in nb.cells if cell.cell_type == "code" and "mo.sweep(" in cell.source)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in sweep_cell.outputs)
    assert "tracking run" not in everything and "IProgress" not in everything and "Warning" not in everything
    status = next(outputs[i] for i, cell in enumerate(nb.cells) if "sweep.status()" in cell.source)
    assert status.startswith("sweep 'notebook-test' (") and ("no trial finished yet" in status or "best val_loss=" in status)
    best = next(text for text in outputs.values() if "best params:" in text)
    assert "'lr':" in best and "'hidden':" in best and "best MLflow run:" in best
    table = next(outputs[i] for i, cell in enumerate(nb.cells) if "trials_dataframe()" in cell.source)
    assert "params_lr" in table and "COMPLETE" in table  # Optuna's trials table rendered in the notebook
    # the sweep really wrote its journal and store under the project folder
    assert (tmp_path / "project" / "optuna" / "journal.log").exists()
    assert (tmp_path / "project" / "mlflow.db").exists()
