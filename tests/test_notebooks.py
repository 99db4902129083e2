"""The committed notebooks: thin, parameterised, and free of outputs and volatile metadata.
(Executing them at smoke size is nbval's job: pytest --nbval-lax collects notebooks/.)"""
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_is_one_notebook_per_paper_artifact():
    stems = [p.stem for p in NOTEBOOKS]
    for expected in ("00_datasets", "01_main_results", "02_trajectory", "03_loss_ablation", "04_sampler", "05_sensitivity"):
        assert expected in stems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'size = "smoke"' in params[0].source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            assert "import torch" not in cell.source  # model and training code live in the library
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
