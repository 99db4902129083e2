"""The committed notebooks: thin, parameterised, free of outputs and volatile metadata; their
parameters cell is the committed configuration the library reads, and each notebook with runs
declares them once. (Executing them at smoke size is nbval's job: pytest --nbval-lax collects
notebooks/.)"""
import nbformat
import pytest

from fmrec_lib.experiments import notebooks, reports
from fmrec_lib.experiments.context import Context
from fmrec_lib.experiments.notebooks import notebook_paths
from fmrec_lib.experiments.runs import RunSpec, TunedSpec

NOTEBOOKS = notebook_paths()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_thin_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    params = notebooks.parameters(path)
    assert params.pop("size") == "smoke" and params.pop("device") == "auto" and params.pop("output_dir") is None
    assert params == notebooks.defaults(path.stem)  # the committed configuration: this cell, read by the library
    assert notebooks.is_committed_configuration(path.stem, {"size": "quick", **params})
    assert not notebooks.is_committed_configuration(path.stem, {**params, "seed": -1})
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[1].source.strip().splitlines()
    assert setup[-1].startswith(f'ctx = fmrec_lib.setup("{path.stem}"') and len(setup) <= 4
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
        assert "import torch" not in cell.source and "def " not in cell.source  # code lives in the library
    assert set(nb.metadata) <= {"kernelspec", "language_info"}


def test_every_notebook_that_trains_declares_its_runs_once(tmp_path):
    ctx = Context.create("smoke", "cpu", tmp_path, progress=False, read_roots=())
    assert set(reports.NEEDS) == {p.stem for p in NOTEBOOKS} - {"00_datasets"}
    for name in reports.NEEDS:
        needs = reports.needs(ctx, name)
        assert needs and all(isinstance(n.spec, (RunSpec, TunedSpec)) for n in needs)
        assert len({n.role for n in needs}) == len(needs)  # each run has one role in its notebook
    # the main table: every grid point at the first seed, the later seeds tuned on them
    main = reports.needs(ctx, "01_main_results", datasets=["ml-100k"], models=["sasrec"], seeds=[1, 2])
    assert [type(n.spec).__name__ for n in main] == ["RunSpec", "RunSpec", "TunedSpec"]
    assert [n.spec.overrides["lr"] for n in main[:2]] == [1e-3, 3e-3] and main[2].spec.tuning_seed == 1


def test_an_unknown_notebook_is_named():
    with pytest.raises(ValueError, match="unknown notebook '99_x'; known: 00_datasets"):
        notebooks.defaults("99_x")


def test_the_suite_selects_notebooks_in_order():
    names = [p.stem for p in notebook_paths()]
    assert names == sorted(names) and names[0] == "00_datasets" and len(names) >= 6
    assert [p.stem for p in notebook_paths(["02"])] == ["02_trajectory"]
    with pytest.raises(ValueError, match="no notebook matches"):
        notebook_paths(["99"])
