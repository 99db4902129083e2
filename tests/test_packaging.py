"""environment.yml and pyproject.toml must list the same dependencies."""
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {d for d in pip_section if not d.startswith("-e")}
    assert listed == wanted
    assert "python=3.11" in env["dependencies"]


def test_readme_names_the_two_commands_and_ci_calls_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "make paper" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_outputs_are_anchored_to_the_checkout_or_the_working_folder_never_the_installation(tmp_path):
    import subprocess
    import sys

    code = "from fmrec_lib.utils import REPO_ROOT; print(REPO_ROOT)"
    # from a checkout: the repository
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == str(REPO)
    # as an installed copy (no pyproject.toml beside the package): the folder the user works in
    installed = tmp_path / "site-packages"
    import shutil
    shutil.copytree(REPO / "fmrec_lib", installed / "fmrec_lib", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                         env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == str(work.resolve())


def test_make_install_takes_the_cpu_build_from_pytorchs_cpu_index_with_a_fallback():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("$(VENV)/.installed:"):makefile.index("install: $(VENV)/.installed")]
    assert "TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu" in makefile
    cpu = recipe.index('--index-url "$(TORCH_CPU_INDEX)" "$(TORCH)"')
    fallback = recipe.index('|| {', cpu)
    assert recipe.index('pip install -q "$(TORCH)"', fallback) > fallback  # the plain pin only if the index fails
    assert recipe.index("nvidia-smi") < cpu and recipe.index('import torch') < cpu  # CUDA machines and own torch first


def test_without_the_data_the_tests_that_need_it_skip_saying_where_the_library_looked(tmp_path):
    """On a machine without the data (and CI unset) a data-dependent test skips with the reason."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"FMREC_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           "tests/data/test_data.py::test_ml100k_statistics"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and f"looked in: {tmp_path / 'ml-100k' / 'ml-100k.inter'}" in done.stdout
    assert "real datasets: NOT FOUND" in done.stdout  # said once, at the top of the run
