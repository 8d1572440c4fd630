"""The package's import graph has no cycle (imports inside functions count: they hide cycles, not remove them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hubtools

PACKAGE = Path(hubtools.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_in_the_package():
    # A package importing its own submodule (hubtools.runfolder -> hubtools.runfolder.layout) is a tree edge,
    # but the submodule importing the package's name back would loop: both directions are in the graph.
    graph = _import_graph()
    for name in graph:  # a submodule always "imports" its parent package first: that is not a cycle
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_card_publish_and_sample_do_not_import_each_other_or_the_model_loaders():
    graph = _import_graph()
    stages = {"hubtools.card", "hubtools.publish", "hubtools.sample"}
    for stage in stages:
        assert not graph[stage] & (stages - {stage}), f"{stage} imports {graph[stage] & stages}"
    for stage in ("hubtools.card", "hubtools.publish"):
        assert not graph[stage] & {"hubtools.pipelines", "hubtools.tinymodel", "hubtools.devices"}


# -- layers: the front ends on top, the stages below them, the families below the stages -----------------

FRONT_ENDS = ("hubtools.cli", "hubtools.studio", "hubtools.__main__")
STAGES = ("hubtools.runner", "hubtools.training", "hubtools.sample", "hubtools.prior", "hubtools.evaluation",
          "hubtools.card", "hubtools.publish", "hubtools.concepts", "hubtools.demo", "hubtools.hackathon",
          "hubtools.identifier")
ALLOWED_FAMILY_TO_STAGE: set[tuple[str, str]] = set()  # none: a family imports nothing of the stages


def _is_in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_nothing_below_the_front_ends_imports_them():
    graph = _import_graph()
    wrong = {(module, target) for module, targets in graph.items() if not _is_in(module, FRONT_ENDS)
             for target in targets if _is_in(target, ("hubtools.cli", "hubtools.studio"))}
    assert not wrong, f"a stage or library module imports a front end: {sorted(wrong)}"


def test_no_family_imports_a_stage():
    graph = _import_graph()
    wrong = {(module, target) for module, targets in graph.items() if _is_in(module, ("hubtools.families",))
             for target in targets if _is_in(target, STAGES)}
    assert wrong <= ALLOWED_FAMILY_TO_STAGE, f"a family imports a stage: {sorted(wrong - ALLOWED_FAMILY_TO_STAGE)}"


def test_the_graph_follows_imports_made_inside_functions():
    graph = _import_graph()
    # runner imports hubtools.training only inside train_folder: the graph must still have the edge
    assert "hubtools.training" in graph["hubtools.runner"]
