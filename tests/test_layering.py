"""The core stays free of integrations, and ``import mlorch`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mlorch"

# package -> modules it must never import (directly, at any level of the file)
FORBIDDEN = {
    "core": (
        "distributed",
        "optuna",
        "mlflow",
        "dask_jobqueue",
        "yaml",
        "pydantic",
        "mlorch.execution",
        "mlorch.tracking",
        "mlorch.tuning",
        "mlorch.config",
        "mlorch.app",
        "mlorch.cli",
    ),
    "config": ("distributed", "optuna", "mlflow", "mlorch.core", "mlorch.execution", "mlorch.tuning", "mlorch.tracking"),
    "execution": ("optuna", "mlflow", "mlorch.tuning", "mlorch.tracking", "mlorch.cli"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_layers_do_not_import_upwards_or_integrations():
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PKG / package).glob("*.py")):
            for name in _imports(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    offenders.append(f"{path.relative_to(PKG.parent)} imports {name}")
    assert offenders == []


def test_import_mlorch_does_not_load_mlflow_or_optuna():
    code = "import sys, mlorch; print(sorted(m for m in ('mlflow', 'optuna', 'dask_jobqueue', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_of_mlorch_imports_itself_back():
    """No import cycles, lazy imports inside functions included (only ``TYPE_CHECKING`` imports are left out)."""
    import grimp

    graph = grimp.build_graph("mlorch", exclude_type_checking_imports=True)
    cycles = sorted(
        f"{a} -> {b} -> ... -> {a}"
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if graph.chain_exists(importer=b, imported=a)
    )
    assert not cycles, "\n".join(cycles)
