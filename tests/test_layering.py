"""The package's import graph: no cycle inside ``m3ddm_ray``, and the layering that docs/architecture.md
and the package docstring describe (issue 13, item 2).

The graph is built from the source with ``ast`` (no module is imported), and counts every import,
also the ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "m3ddm_ray"

#: Layers from the bottom up; a module may import its own layer and the layers below, never above.
#: The same order is written in docs/architecture.md and m3ddm_ray/__init__.py.
LAYERS: list[tuple[str, ...]] = [
    ("m3ddm_ray", "m3ddm_ray.__main__"),  # the (empty) package itself; __main__ is checked with cli
    ("m3ddm_ray.errors", "m3ddm_ray.rules"),
    ("m3ddm_ray.geometry", "m3ddm_ray.plan", "m3ddm_ray.storage", "m3ddm_ray.quality",
     "m3ddm_ray.distributed.manifest", "m3ddm_ray.masks", "m3ddm_ray.tiles", "m3ddm_ray.task"),
    ("m3ddm_ray.video", "m3ddm_ray.canvas_file", "m3ddm_ray.coarse_file"),
    ("m3ddm_ray.models", "m3ddm_ray.sampling", "m3ddm_ray.schedulers", "m3ddm_ray.caching", "m3ddm_ray.runtime",
     "m3ddm_ray.settings", "m3ddm_ray.sampling_tiles"),
    ("m3ddm_ray.latents",),
    ("m3ddm_ray.prepare",),
    ("m3ddm_ray.pipeline",),
    ("m3ddm_ray.tiled",),
    ("m3ddm_ray.distributed",),
    ("m3ddm_ray.evaluation", "m3ddm_ray.training"),
    ("m3ddm_ray.cli",),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _known(name: str) -> str:
    """The module ``name`` or, for ``pkg.attr``, the nearest enclosing module that exists."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else ""


def import_graph() -> dict[str, set[str]]:
    """module -> the ``m3ddm_ray`` modules it imports (absolute and relative, at any depth)."""
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(_known(a.name) for a in node.names if a.name.split(".")[0] == "m3ddm_ray")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "m3ddm_ray":
                    continue
                for alias in node.names:  # "from pkg import submodule" depends on the submodule
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in MODULES else _known(target))
        deps.discard("")
        deps.discard(mod)
        graph[mod] = deps
    return graph


GRAPH = import_graph()


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]``, or None. A package importing its own submodules (its
    ``__init__`` re-exports) and a submodule importing its parent package are not cycles between
    modules of different jobs, so those edges are left out."""
    def related(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    edges = {m: {d for d in deps if not related(m, d)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def layer_of(mod: str) -> int:
    best, level = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = mod.startswith(name + ".") and name != "m3ddm_ray"  # the root holds no module by prefix
            if (mod == name or inside) and len(name) > best:
                best, level = len(name), i
    if mod == "m3ddm_ray.__main__":
        return len(LAYERS) - 1
    assert level is not None, f"{mod} is in no layer; add it to LAYERS and docs/architecture.md"
    return level


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "m3ddm_ray.distributed.stages" in graph["m3ddm_ray.distributed.job"]  # relative, top level
    assert "m3ddm_ray.pipeline" in graph["m3ddm_ray.distributed.stages"]  # inside a function
    assert "m3ddm_ray.video.source" in graph["m3ddm_ray.video.readers"]


def test_cycle_detection_finds_a_planted_cycle():
    graph = {k: set(v) for k, v in import_graph().items()}
    graph["m3ddm_ray.errors"].add("m3ddm_ray.cli")  # cli -> ... -> errors -> cli
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "m3ddm_ray.errors" in cycle


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_every_module_imports_only_its_own_layer_or_below(mod):
    mine = layer_of(mod)
    up = sorted(d for d in GRAPH[mod] if layer_of(d) > mine)
    assert not up, f"{mod} (layer {mine}) imports higher layers: {up}"


# ------------------------------------------------------------------------------ the task's difference
#: The task names (``m3ddm_ray.rules.TASKS``).
TASK_NAMES = {"outpaint", "inpaint", "extend"}
#: Where a task name may be compared: the task module (everything that differs between the tasks)
#: and the manifest's validation (which columns a row of each task needs).
TASK_NAME_HOMES = {"m3ddm_ray/task.py", "m3ddm_ray/distributed/manifest/validation.py"}
#: Modules that still compare task names, and why.
TASK_NAME_EXCEPTIONS = {
    "m3ddm_ray/evaluation/config.py": "check_task_settings: the eval section's keys of each task (validation)",
}


def _names_a_task(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TASK_NAMES
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return bool(node.elts) and all(isinstance(e, ast.Constant) and e.value in TASK_NAMES for e in node.elts)
    return False


def task_name_comparisons(source: str) -> list[int]:
    """Lines of ``source`` that compare something with a task name (``x == "inpaint"``,
    ``task in ("inpaint", "extend")``, ...) or call ``task_of(...)``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_names_a_task(x) for x in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "task_of":
            lines.append(node.lineno)
    return sorted(lines)


def test_the_task_name_scan_finds_comparisons():
    src = ('a = task == "inpaint"\nb = row["task"] != "outpaint"\nc = t in ("inpaint", "extend")\n'
           'd = task_of(r)\ne = x == "other"\n')
    assert task_name_comparisons(src) == [1, 2, 3, 4]


def test_no_task_name_comparison_outside_the_task_module():
    root = PKG.parent
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in TASK_NAME_HOMES:
            continue
        lines = task_name_comparisons(path.read_text())
        if lines:
            found[rel] = lines
    assert set(found) <= set(TASK_NAME_EXCEPTIONS), {k: v for k, v in found.items() if k not in TASK_NAME_EXCEPTIONS}
    stale = set(TASK_NAME_EXCEPTIONS) - set(found)
    assert not stale, f"no task-name comparison left in {sorted(stale)}: remove them from TASK_NAME_EXCEPTIONS"


# ------------------------------------------------------------------------------ private names
#: Modules that import a private name of another module of their package, and why.
PRIVATE_IMPORT_EXCEPTIONS = {
}


def private_imports(path: Path) -> list[str]:
    """``module.name`` of every private name ``path`` imports from another module of the package. A
    private *module* (``_common``, ``_lpips``: helpers of one package, by their name) may be imported,
    and its names used, by its package."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        target = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
            if node.level else (node.module or "")
        if target.split(".")[0] != "m3ddm_ray" or target.rsplit(".", 1)[-1].startswith("_"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__") and f"{target}.{alias.name}" not in MODULES:
                out.append(f"{target}.{alias.name}")
    return out


def test_the_private_import_scan_finds_one(tmp_path, monkeypatch):
    planted = PKG / "distributed" / "finalize.py"
    text = planted.read_text() + "\nfrom .stages import _secret\nfrom ..evaluation.metrics import _common\n"
    fake = tmp_path / "m3ddm_ray" / "distributed" / "finalize.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path / "m3ddm_ray")
    assert private_imports(fake) == ["m3ddm_ray.distributed.stages._secret"]


def test_no_module_imports_a_private_name_of_another():
    root = PKG.parent
    found = {path.relative_to(root).as_posix(): private_imports(path) for path in sorted(PKG.rglob("*.py"))}
    found = {k: v for k, v in found.items() if v}
    assert set(found) <= set(PRIVATE_IMPORT_EXCEPTIONS), {k: v for k, v in found.items()
                                                          if k not in PRIVATE_IMPORT_EXCEPTIONS}
    stale = set(PRIVATE_IMPORT_EXCEPTIONS) - set(found)
    assert not stale, f"no private import left in {sorted(stale)}: remove them from PRIVATE_IMPORT_EXCEPTIONS"
