"""notebooks/review_uncertainty.ipynb: well formed, thin, and runs headless end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "review_uncertainty.ipynb"


def read_notebook():
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (dev extra)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_notebook_is_thin_and_explains_the_maps():
    nb = read_notebook()
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert all(not c.outputs for c in nb.cells if c.cell_type == "code"), "stored without outputs"
    imports = set()
    for source in code:
        imports.update(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.M))
    assert imports <= {"os", "ipywidgets", "IPython.display", "mefn"}, imports
    assert max(len(source.splitlines()) for source in code) <= 45
    for phrase in (
        "probability that the voxel's label is wrong",
        "u_CT - u_PET",
        "review flag",
        "Confidence",
        "mefn review",
    ):
        assert phrase in text
    joined = "\n".join(code)
    assert "widgets.Dropdown" in joined and "widgets.IntSlider" in joined
    assert "viz.prepare_review" in joined and "viz.review_figure" in joined


@pytest.fixture(scope="module")
def python3_kernel() -> str:
    pytest.importorskip("nbclient", reason="nbclient not installed (dev extra)")
    pytest.importorskip("ipykernel", reason="ipykernel not installed (dev extra)")
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3"],
            check=True,
            capture_output=True,
        )
    return "python3"


@pytest.mark.slow
def test_notebook_runs_on_a_generated_phantom(python3_kernel, monkeypatch, tmp_path):
    try:
        from mefn.inference import list_models
    except ImportError as exc:
        pytest.skip(f"mefn.inference cannot be imported yet ({exc})")
    if "mefn_default" not in list_models():
        pytest.skip("bundled default weights mefn_default are not there yet (mefn/weights/)")
    pytest.importorskip("mefn.data.phantoms", reason="phantom generator not written yet")
    from nbclient import NotebookClient

    for name in ("MEFN_REVIEW_CASE", "MEFN_REVIEW_OUTPUTS", "MEFN_REVIEW_REFERENCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEFN_REVIEW_SEED", "7")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = read_notebook()
    # iopub_timeout: on a loaded machine the last outputs of a cell can arrive seconds after
    # its reply; nbclient's default (4 s) then drops them silently, so wait longer and fail loudly.
    client = NotebookClient(
        nb,
        timeout=300,
        iopub_timeout=60,
        raise_on_iopub_timeout=True,
        shutdown_kernel="immediate",
        kernel_name=python3_kernel,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 1  # the review page (plus the lesion view when lesions were found)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "MTV" in printed and "flagged for review" in printed
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
