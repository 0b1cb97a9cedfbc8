"""Imports point down: no cycles among zoo's modules or its packages, counting imports inside
functions."""
import ast
import sys
from pathlib import Path

import pytest

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


# Libraries whose import costs seconds or that a check before training must not load.
HEAVY = {"tensorflow", "keras", "mlflow", "matplotlib", "ray", "submitit", "sqlalchemy", "psycopg2",
         "scipy", "pandas", "nbclient", "PIL", "jax", "torch"}


def _imports_by_level():
    """module -> (what its top level imports, [function-level ``from zoo... import`` nodes])."""
    top, lazy = {}, {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("zoo", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        top[name], lazy[name] = set(), []

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.ImportFrom) and child.level == 0:
                    if inside and child.module.startswith("zoo"):
                        lazy[name].append(child)
                    elif not inside:
                        top[name].update([child.module, *(f"{child.module}.{a.name}" for a in child.names)])
                elif isinstance(child, ast.Import) and not inside:
                    top[name].update(a.name for a in child.names)
                visit(child, inside)
        visit(ast.parse(path.read_text()), False)
    return top, lazy


def _loads(top, start) -> set[str]:
    """Every zoo module and outside top-level package importing ``start`` runs (parents included)."""
    seen, stack = set(), [start]
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        stack.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        for dep in top.get(module, ()):
            if dep.startswith("zoo"):
                stack.extend([dep] if dep in top else [])
            else:
                seen.add(dep.split(".")[0])
    return seen


def test_imports_sit_at_the_top_unless_laziness_buys_something():
    """A function-level import of gradzoo's own module is there for a reason: at the top it would
    load a heavy library (TensorFlow, MLflow, matplotlib, ...) that importing the module does not
    already load (so a config is checked before TensorFlow loads), or close an import cycle.
    Every other import is at the top, where a reader looks for a module's dependencies."""
    top, lazy = _imports_by_level()
    needless = []
    for module, nodes in lazy.items():
        already = _loads(top, module) & HEAVY
        for node in nodes:
            targets = [t for t in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if t in top]
            if not targets:
                continue
            brings = set().union(*(_loads(top, t) & HEAVY for t in targets)) - already
            cycle = any(module in _loads(top, t) for t in targets)
            if not brings and not cycle:
                needless.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert not needless, needless


def test_the_lazy_imports_rule_sees_a_needless_one(tmp_path, monkeypatch):
    """The rule above fails on a function-level import that buys nothing (zoo.config.schema from
    zoo.config.budget: neither loads anything heavy)."""
    fake = tmp_path / "zoo"
    for path in ROOT.rglob("*.py"):
        target = fake / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (fake / "config" / "budget.py").write_text((fake / "config" / "budget.py").read_text()
                                               + "\n\ndef _late():\n    from zoo.config.schema import SpecError\n    return SpecError\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    with pytest.raises(AssertionError, match="zoo.config.budget"):
        test_imports_sit_at_the_top_unless_laziness_buys_something()


def test_the_design_pages_layout_lists_every_package_below_what_it_imports():
    """docs/design.md's map is the import order: every package of zoo is listed, and from
    zoo/config/ on each imports (counting imports inside functions) only packages above it."""
    page = (ROOT.parent / "docs" / "design.md").read_text()
    block = page[page.index("```\nzoo/__init__.py"):]
    listed = [line.split()[0].rstrip("/").replace("/", ".") for line in block[4:block.index("```", 4)].splitlines()
              if line.startswith("zoo/")]
    packages = {p.parent.relative_to(ROOT.parent).as_posix().replace("/", ".") for p in ROOT.glob("*/__init__.py")}
    assert set(listed) - {"zoo.__init__.py"} == packages
    order = {name: i for i, name in enumerate(listed)}
    upward = []
    for module, deps in imports().items():
        package = ".".join(module.split(".")[:2])
        for dep in deps:
            target = ".".join(dep.split(".")[:2])
            if package in order and target in order and target != package and order[target] > order[package]:
                upward.append(f"{module} imports {dep}, listed below it")
    assert not upward, upward
