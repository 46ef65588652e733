"""The evaluation package has one path for every task: no per-task twin modules, task names compared
only where the eval settings are validated, and no module importing another module's private names.
Read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EVAL = Path(__file__).resolve().parent.parent / "m3ddm_ray" / "evaluation"
SOURCES = sorted(EVAL.rglob("*.py"))
TASK_NAMES = {"outpaint", "inpaint", "extend"}
#: The one module that may compare task names: it validates the task's eval settings.
COMPARES_TASKS = {"config.py"}


def _private_imports(tree: ast.AST) -> list[str]:
    """``from m import _x`` and ``module._x`` (``module`` bound by an import) in ``tree``."""
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def _task_comparisons(tree: ast.AST) -> list[int]:
    """Lines where a task name is an operand of a comparison (``==``, ``!=``, ``in``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {c.value for op in operands for c in ast.walk(op) if isinstance(c, ast.Constant)}
            if names & TASK_NAMES:
                lines.append(node.lineno)
    return lines


def test_the_checks_see_what_they_look_for():
    tree = ast.parse("from .stages import _fail\nfrom . import rows\nrows._batch([])\nif task == 'inpaint': pass\n")
    assert _private_imports(tree) == ["from .stages import _fail", "rows._batch"]
    assert _task_comparisons(tree) == [4]


def test_no_per_task_twin_modules():
    assert not [p.name for p in EVAL.glob("task_*.py")]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(EVAL)))
def test_no_private_name_is_imported_from_another_module(path):
    assert _private_imports(ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(EVAL)))
def test_task_names_are_compared_only_where_the_settings_are_validated(path):
    lines = _task_comparisons(ast.parse(path.read_text()))
    assert not lines or path.name in COMPARES_TASKS, f"{path.name}: task-name comparison on lines {lines}"
