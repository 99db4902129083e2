"""The committed notebooks: thin, parameterised, free of outputs and volatile metadata, and
their parameters are the library's committed configuration (reports.DEFAULTS).
(Executing them at smoke size is nbval's job: pytest --nbval-lax collects notebooks/.)"""
import ast
from pathlib import Path

import nbformat
import pytest

from fmrec_lib import reports

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_is_one_notebook_per_paper_artifact_and_open_question():
    assert [p.stem for p in NOTEBOOKS] == list(reports.DEFAULTS)


def _parameters(nb) -> dict:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    values = {}
    for node in ast.parse(cell.source).body:
        (target,) = node.targets
        values[target.id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_thin_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    params = _parameters(nb)
    assert params.pop("size") == "smoke" and params.pop("device") == "auto" and params.pop("output_dir") is None
    assert params == reports.DEFAULTS[path.stem]  # the committed configuration, one source of truth
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[1].source.strip().splitlines()
    assert setup[-1].startswith(f'ctx = fmrec_lib.setup("{path.stem}"') and len(setup) <= 4
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
        assert "import torch" not in cell.source and "def " not in cell.source  # code lives in the library
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
