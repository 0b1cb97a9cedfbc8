"""Imports point down: no cycles among zoo's modules or its packages, counting imports inside
functions."""
import ast
from pathlib import Path

import zoo

ROOT = Path(zoo.__file__).parent


def imports() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("zoo", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("zoo"))
        graph[name] = found
    return {k: {m for m in v if m in graph and m != k} for k, v in graph.items()}


def cycle_through(graph, start):
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_studies_and_tracking_have_no_import_cycles():
    graph = imports()
    for module in sorted(graph):
        if module.startswith(("zoo.studies", "zoo.tracking", "zoo.cli")):
            assert cycle_through(graph, module) is None, " -> ".join(cycle_through(graph, module))


def test_no_cycle_between_packages():
    """Between zoo's packages (zoo.instruments, zoo.report, zoo.models, ...; a top-level module counts
    as its own), counting imports inside functions: a package that needs another's code sits
    above it. (monitor <-> report and models <-> budget were cycles: GradientMonitor, which draws
    the report, moved to zoo.gradient_monitor; the registry lookup of a family's memory estimate
    to zoo.models.estimate.)"""
    graph = {}
    for module, deps in imports().items():
        package = ".".join(module.split(".")[:2])
        graph.setdefault(package, set()).update(".".join(d.split(".")[:2]) for d in deps)
    graph = {k: v - {k} for k, v in graph.items()}
    cycles = [" -> ".join(c) for p in sorted(graph) if (c := cycle_through(graph, p))]
    assert not cycles, cycles


def test_tracking_imports_no_study_code_and_the_study_callback_validates_and_judges():
    """zoo.tracking is a floor below the studies: none of its modules, the sweep callback
    included, imports zoo.studies or zoo.cli.precheck. A study is validated and judged by the studies
    package's callback, which extends the tracking one."""
    graph = imports()
    for module, deps in graph.items():
        if module.startswith("zoo.tracking"):
            assert not {d for d in deps if d.startswith(("zoo.studies", "zoo.cli.precheck"))}, module
    assert {d for d in graph["zoo.studies.callback"] if d.startswith("zoo.studies")} == {
        "zoo.studies.validate", "zoo.studies.judge"}
    assert "zoo.tracking.sweep" in graph["zoo.studies.callback"]


def test_no_module_of_zoo_imports_the_package_root():
    """``zoo/__init__.py`` is for users: a module of the package imports the module that defines
    what it needs (zoo.training.spec.build_model, zoo.training.run.train, zoo.runtime.stopping), never ``zoo`` itself,
    whose public functions delegate to those modules."""
    found = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "zoo" and node.level == 0:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from zoo import ...")
            elif isinstance(node, ast.Import) and any(a.name == "zoo" for a in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import zoo")
    assert not found, found
