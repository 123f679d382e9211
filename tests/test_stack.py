"""The package stack: ``gnn`` (one trial) ← ``sweeps`` (many trials, the MLflow record) ← ``analysis`` (fits,
refinement, the ``matscale`` command). A lower package never imports a higher one, not even inside a function;
the fitting library needs only numpy and scipy; the command line parses without the heavy stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("gnn", "sweeps", "analysis")  #: bottom to top


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """Every module ``path`` imports (top level or inside functions), absolute, with its line; for ``from M import
    N`` both ``M`` and ``M.N`` (N may be a submodule)."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((source, node.lineno))
            found += [(f"{source}.{a.name}", node.lineno) for a in node.names]
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """``file:line imports module`` for each import of a higher layer by a lower one (the first name per line)."""
    bad = {}
    for rank, layer in enumerate(LAYERS):
        for path in sorted((root / layer).rglob("*.py")):
            for name, line in imports(path, root):
                top = name.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > rank:
                    bad.setdefault(f"{path.relative_to(root)}:{line}", f"imports {name}")
    return [f"{where} {what}" for where, what in bad.items()]


def test_no_package_imports_a_higher_one():
    assert upward_imports() == []


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (imports inside functions count)."""
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for layer in LAYERS for p in (root / layer).rglob("*.py")}
    edges = {m: set() for m in modules}
    for m, path in modules.items():
        edges[m] = {name for name, _ in imports(path, root) if name in modules and name != m}
    order, low, stack, cycles = {}, {}, [], []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while group[-1:] != [v]:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(edges):
        if v not in order:
            visit(v)
    return cycles


def test_no_import_cycles():
    assert import_cycles() == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "gnn" / "x.py").write_text("def f():\n    from analysis import fit\n")
    (tmp_path / "sweeps" / "y.py").write_text("from gnn import x\nfrom . import z\n")
    assert upward_imports(tmp_path) == ["gnn/x.py:2 imports analysis"]


def test_the_check_sees_a_cycle_through_a_lazy_import(tmp_path):
    (tmp_path / "gnn").mkdir()
    (tmp_path / "gnn" / "__init__.py").write_text("")
    (tmp_path / "gnn" / "a.py").write_text("from gnn.b import f\n")
    (tmp_path / "gnn" / "b.py").write_text("def f():\n    from gnn import a\n")
    (tmp_path / "gnn" / "c.py").write_text("import gnn.a\n")
    assert import_cycles(tmp_path) == [["gnn.a", "gnn.b"]]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


BLOCK = "import sys\nfor m in ('torch', 'torch_geometric', 'ray', 'mlflow', 'optuna'):\n    sys.modules[m] = None\n"


def test_fitting_works_without_torch_ray_and_mlflow():
    """analysis.fit, laws, scaling and propose import and fit with the training and tracking stack absent."""
    res = _run(BLOCK + """
import numpy as np
import analysis.fit, analysis.laws, analysis.scaling, analysis.propose
from analysis import fit_curve, make_curve
x = np.array([100, 200, 400, 800, 1600, 3200.0])
r = fit_curve(make_curve(x, 2.0 * x ** -0.3 + 0.1), "floor", n_boot=20, workers=1)
p = analysis.propose.propose(make_curve(x, 2.0 * x ** -0.3), 2, (100, 6400), n_boot=20, integer=True, law="broken")
print(r["law"], round(r["params"]["alpha"], 3), len(p.points))
""")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[:2] == ["floor", "0.3"]


def test_blocking_torch_is_real():
    """(The block above bites: a module that needs torch fails under it.)"""
    res = _run(BLOCK + "import gnn.models\n")
    assert res.returncode != 0 and "torch" in res.stderr


@pytest.mark.parametrize("command", [[], ["sweep"], ["train"], ["analyze"], ["fit"], ["data", "import"], ["demo"]])
def test_help_needs_no_heavy_import(command):
    """``matscale … --help`` builds the whole parser without importing torch, Ray, MLflow, pandas or scipy."""
    res = _run(f"""
import sys
from analysis.cli import main
try:
    main({command!r} + ['--help'])
except SystemExit as e:
    assert e.code == 0
heavy = sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas', 'scipy', 'optuna', 'pymatgen', 'matplotlib')
               if m in sys.modules)
print('HEAVY', heavy)
""")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HEAVY []" in res.stdout
