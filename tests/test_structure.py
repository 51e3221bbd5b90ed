"""House rules for llmcalc/: small functions, short modules, and a core that knows nothing of the CLI.

Each test collects every offender, so one failing run names all of them.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmcalc"
SCRIPT = ROOT / "scripts" / "complexity.py"

MAX_CC = 20  # radon grade C at most
MAX_LINES = 400
# The command-line front end; everything else in llmcalc/ is the core. __main__ only starts the CLI.
FRONT_END = ("llmcalc/cli/", "llmcalc/report.py", "llmcalc/sweepreport.py", "llmcalc/explain.py", "llmcalc/chart.py", "llmcalc/api.py", "llmcalc/__main__.py")
FORBIDDEN_IN_CORE = ("typer", "rich", "click", "llmcalc.cli", "llmcalc.report")
LAZY_IN_CORE = ("yaml",)  # allowed only inside functions: start-up time


def _load_script():
    spec = importlib.util.spec_from_file_location("complexity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


complexity = _load_script()


def test_no_function_above_grade_c():
    offenders = [f"{path}:{line} {name} {cc}" for path, line, name, cc in sorted(complexity.complexities(PACKAGE))
                 if cc > MAX_CC]
    assert not offenders, f"cyclomatic complexity over {MAX_CC}:\n" + "\n".join(offenders)


def test_complexity_sees_functions_methods_and_closures(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text("def f(a):\n    def g(b):\n        return 1 if b else 2\n    return g\n\n\n"
                                  "class C:\n    def h(self, x):\n        return x or 1\n")
    found = sorted(complexity.complexities(package))
    assert found == [("pkg/m.py", 1, "f", 1), ("pkg/m.py", 2, "f.g", 2), ("pkg/m.py", 8, "C.h", 2)]


def test_no_module_over_400_lines():
    offenders = [f"{path}: {n} lines" for path, n in complexity.line_counts(PACKAGE).items() if n > MAX_LINES]
    assert not offenders, f"modules over {MAX_LINES} lines:\n" + "\n".join(offenders)


def _module_name(relpath: str) -> str:
    """llmcalc/cli/common.py -> llmcalc.cli.common; llmcalc/cli/__init__.py -> llmcalc.cli."""
    parts = relpath.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement may load (from X import a: X and X.a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def _imports(tree: ast.AST, in_function: bool = False):
    """(import node, whether it sits inside a function) for every import statement."""
    for child in ast.iter_child_nodes(tree):
        inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, inside
        yield from _imports(child, inside)


def _layering_offenders(relpath: str, source: str) -> list[str]:
    module, is_package = _module_name(relpath), relpath.endswith("/__init__.py")
    offenders = []
    for node, in_function in _imports(ast.parse(source)):
        names = _imported(node, module, is_package)
        for banned in (FORBIDDEN_IN_CORE if in_function else FORBIDDEN_IN_CORE + LAZY_IN_CORE):
            if any(name == banned or name.startswith(banned + ".") for name in names):
                lazy = " at module top level" if banned in LAZY_IN_CORE else ""
                offenders.append(f"{relpath}:{node.lineno} imports {banned}{lazy}")
    return offenders


def _core_modules() -> list[Path]:
    return [path for path in complexity.modules(PACKAGE)
            if not complexity.relative(path, PACKAGE).startswith(FRONT_END)]


def test_core_never_imports_the_front_end():
    offenders = [line for path in _core_modules()
                 for line in _layering_offenders(complexity.relative(path, PACKAGE), path.read_text(encoding="utf-8"))]
    assert not offenders, "core modules importing the front end (or yaml eagerly):\n" + "\n".join(offenders)


@pytest.mark.parametrize("relpath, source, expected", [
    ("llmcalc/a.py", "import typer", ["llmcalc/a.py:1 imports typer"]),
    ("llmcalc/a.py", "from rich.console import Console", ["llmcalc/a.py:1 imports rich"]),
    ("llmcalc/a.py", "def f():\n    import click", ["llmcalc/a.py:2 imports click"]),
    ("llmcalc/a.py", "from .report import render", ["llmcalc/a.py:1 imports llmcalc.report"]),
    ("llmcalc/a.py", "from llmcalc import cli", ["llmcalc/a.py:1 imports llmcalc.cli"]),
    ("llmcalc/memory/b.py", "def f():\n    from ..cli import app", ["llmcalc/memory/b.py:2 imports llmcalc.cli"]),
    ("llmcalc/memory/__init__.py", "from .report import x", []),  # llmcalc.memory.report
    ("llmcalc/a.py", "try:\n    from yaml import CSafeLoader\nexcept ImportError:\n    pass",
     ["llmcalc/a.py:2 imports yaml at module top level"]),
    ("llmcalc/a.py", "def f():\n    import yaml", []),
    ("llmcalc/a.py", "import reporting\nfrom .spec import SpecError", []),
])
def test_layering_check_sees_every_import_form(relpath, source, expected):
    assert _layering_offenders(relpath, source) == expected
