"""Imports only go down: cli -> pipeline, kubeflow -> components -> models; serving beside them.

Every module of the project is parsed with `ast`; each `import` / `from ... import`, at
module level or inside a function, is an edge from the importing file to the project
file it names, by its installed name (the folder models/ installs as scarfx.models; see
setup.py). The test fails on
- an import by a flat name (`from models.x import y`): nothing installs `models`; it
  only resolves when the repository root happens to be on sys.path, and then loads a
  second copy of the module beside scarfx.models.x;
- an import against the layer order below (serving is a wing of its own: it imports
  only itself, and nothing but the command line imports it);
- a cycle between layers, or between files (a function-level import does not break
  a cycle, it only hides it).

models/features.py holds the names everyone shares (feature-name prefixes, the
SavedModel's signature names, the metadata and summary file names), and scarfx/__init__.py
the package's version; any module may import them, and they import nothing of the project.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "scarfx"
# The folders installed as scarfx.<folder> (setup.py's package_dir).
PACKAGES = ("pipeline", "kubeflow", "components", "models", "serving", "benchmarks")
SHARED_NAMES = "scarfx.models.features"
SHARED = {SHARED_NAMES, PACKAGE}
# The command line is a layer of its own, whatever folder holds it.
CLI_MODULES = {"scarfx.pipeline.cli"}
# What each layer may import besides itself and SHARED_NAMES.
MAY_IMPORT = {
    "benchmarks": {"cli", "kubeflow", "pipeline", "components", "models", "serving"},
    "cli": {"kubeflow", "pipeline", "components", "models", "serving"},
    "kubeflow": {"pipeline", "components", "models"},  # it compiles what pipeline/ builds
    "pipeline": {"components", "models"},
    "components": {"models"},
    "models": set(),
    "serving": set(),
}


def layer_of(module: str) -> str:
    """'scarfx.models.trainer' -> 'models'; the command line -> 'cli'."""
    if module in CLI_MODULES:
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def project_modules(root: str = ROOT) -> dict[str, str]:
    """{installed dotted module name: file path} for every .py file of the project's packages."""
    found = {}
    init = os.path.join(root, PACKAGE, "__init__.py")
    if os.path.exists(init):
        found[PACKAGE] = init
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = [PACKAGE] + os.path.relpath(path, root)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The project module `name` refers to (a module, or a name inside one), else None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: str, modules: dict[str, str]) -> list[tuple[str, int]]:
    """[(imported project module, line)] for every import statement in the file, at any depth."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = os.path.basename(path) == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when mod is a module, else a name of pkg.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module and (target, node.lineno) not in found:
                found.append((target, node.lineno))
    return found


def flat_name_imports(root: str = ROOT, folders=PACKAGES + ("tests",)) -> list[str]:
    """'path:line imports models.x' for every absolute import by a folder's flat name."""
    found = []
    for top in folders:
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and not node.level:
                        names = [node.module or ""]
                    else:
                        continue
                    for imported in names:
                        if imported.split(".")[0] in PACKAGES:
                            found.append(f"{os.path.relpath(path, root)}:{node.lineno} imports {imported}: "
                                         f"write {PACKAGE}.{imported}")
    return sorted(found)


def import_graph(root: str = ROOT) -> dict[str, list[tuple[str, int]]]:
    modules = project_modules(root)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def order_violations(graph) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target, line in targets:
            if module in SHARED:
                problems.append(f"{module}:{line} imports {target}: {module} must import nothing of the project")
                continue
            if target in SHARED:
                continue
            source_layer, target_layer = layer_of(module), layer_of(target)
            if source_layer == target_layer or target_layer in MAY_IMPORT.get(source_layer, set()):
                continue
            problems.append(f"{module}:{line} imports {target}: layer {source_layer} may not import {target_layer}")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def file_cycles(graph) -> list[list[str]]:
    return cycles({m: {t for t, _ in targets} for m, targets in graph.items()})


def layer_cycles(graph) -> list[list[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        for target, _ in targets:
            if layer_of(module) != layer_of(target):
                edges.setdefault(layer_of(module), set()).add(layer_of(target))
    return cycles(edges)


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_project_is_read(graph):
    assert {"scarfx", "scarfx.pipeline.cli", "scarfx.models.trainer", "scarfx.serving.server",
            "scarfx.components.report", SHARED_NAMES} <= set(graph)
    assert {"scarfx.models.export", SHARED_NAMES} <= {target for target, _ in graph["scarfx.models.trainer"]}


def test_imports_use_the_package_name():
    found = flat_name_imports()
    assert not found, "imports by a flat name (only scarfx is installed):\n" + "\n".join(found)


def test_imports_follow_the_layer_order(graph):
    problems = order_violations(graph)
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_cycle_between_files(graph):
    found = file_cycles(graph)
    assert not found, "files that import each other in a loop:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_cycle_between_layers(graph):
    found = layer_cycles(graph)
    assert not found, "layers that import each other in a loop:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_what_they_guard(tmp_path):
    """An upward import inside a function, a loop of two files, and a flat name are all reported."""
    for package in (PACKAGE, *PACKAGES):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "scarfx" / "__init__.py").write_text('__version__ = "0"\n')
    (tmp_path / "models" / "features.py").write_text("")
    (tmp_path / "models" / "trainer.py").write_text("def f():\n    from scarfx.serving.warmup import write\n")
    (tmp_path / "serving" / "warmup.py").write_text("from . import server\n")
    (tmp_path / "serving" / "server.py").write_text("import scarfx.serving.warmup\nfrom scarfx import __version__\n")
    (tmp_path / "components" / "report.py").write_text("from scarfx.pipeline import outcome\n")
    (tmp_path / "pipeline" / "outcome.py").write_text("from scarfx.components.report import x\n")
    (tmp_path / "pipeline" / "cli.py").write_text("from models.features import LABEL\nimport scarfx.models.trainer\n")
    fake = import_graph(str(tmp_path))
    assert order_violations(fake) == [
        "scarfx.components.report:1 imports scarfx.pipeline.outcome: layer components may not import pipeline",
        "scarfx.models.trainer:2 imports scarfx.serving.warmup: layer models may not import serving",
    ]
    assert file_cycles(fake) == [["scarfx.components.report", "scarfx.pipeline.outcome"],
                                 ["scarfx.serving.server", "scarfx.serving.warmup"]]
    assert layer_cycles(fake) == [["components", "pipeline"]]
    assert flat_name_imports(str(tmp_path)) == [
        f"{os.path.join('pipeline', 'cli.py')}:1 imports models.features: write scarfx.models.features"]
