"""The package as a house of layers, read from its source (ast): a module imports only from its own
layer or below, no two modules import each other (no cycle), an import inside a function is only
for an optional dependency; and the public face the README documents is importable from the top."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fmrec_lib"
# bottom to top; a module's layer is its folder's, or its own name's at the top of the package
LAYERS = [{"utils", "config"}, {"data", "flow", "models", "evaluation"}, {"training"}, {"experiments"}, {"ops"},
          {"cli", "__main__", "__init__"}]
OPTIONAL = {"pooch", "papermill", "nbformat", "submitit", "fmrec_lib.ops.cluster"}  # may be imported inside a function only


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    head = (module.split(".") + ["__init__"])[1]
    return next(i for i, names in enumerate(LAYERS) if head in names)


def _imports(path: Path, module: str):
    """(imported name, inside a function?) for each import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        yield from ((name, id(node) in inner) for name in names)


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = set()
        for name, _ in _imports(path, module):
            while name and name not in files:  # fmrec_lib.training.train.fit -> fmrec_lib.training.train
                name = name.rpartition(".")[0]
            if name and name != module and not (path.name == "__init__.py" and name.startswith(module + ".")):
                targets.add(name)
        graph[module] = targets
    return graph


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} -> {t}" for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, upward


def test_no_import_cycle():
    graph, cycles = _graph(), []

    def reach(start, node, seen):
        for nxt in graph.get(node, ()):
            if nxt == start:
                cycles.append(start)
            elif nxt not in seen:
                seen.add(nxt)
                reach(start, nxt, seen)
    for module in graph:
        reach(module, module, set())
    assert not cycles, f"modules in an import cycle: {sorted(set(cycles))}"


def test_imports_inside_functions_are_only_for_optional_dependencies():
    inner = [f"{path.relative_to(PACKAGE.parent)}: {name}" for path in PACKAGE.rglob("*.py")
             for name, in_function in _imports(path, _module(path))
             if in_function and not any(name == o or name.startswith(o + ".") for o in OPTIONAL)]
    assert not inner, inner


def test_the_layer_test_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above can fail: a model importing the campaign is caught twice."""
    fake = tmp_path / "fmrec_lib"
    for sub in ("models", "ops"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "models" / "m.py").write_text("from ..ops import c\n")
    (fake / "ops" / "c.py").write_text("from ..models import m\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="fmrec_lib.models.m -> fmrec_lib.ops.c"):
        test_no_module_imports_a_higher_layer()
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle()


def test_the_public_face_is_importable_from_the_top():
    import fmrec_lib
    from fmrec_lib import (Context, EvalProtocol, FMRec, FMRecConfig, Run, RunSpec, SamplerConfig,  # noqa: F401
                           SequentialDataset, TrainConfig, build_model, evaluate_model, fit, load_dataset, load_model,
                           plots, reports, setup)

    assert set(fmrec_lib.__all__) <= set(dir(fmrec_lib))
    assert callable(setup) and callable(fit) and FMRecConfig().hidden == 128
