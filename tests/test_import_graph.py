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


# -- start-up: what `hubtools train` imports (issue 29) ----------------------------------------------------------

# Installed, scipy makes diffusers and transformers import scipy.stats and scipy.optimize (~2 CPU-s) in every
# training run, and matplotlib.pyplot costs ~1.5 CPU-s: hubtools needs neither (perceptual hashes in numpy, the
# loss curve in Pillow). The child below runs as if they were not installed.
NOT_NEEDED_TO_TRAIN = ("scipy", "matplotlib", "imagehash")
# what a training run has no use for: the hub server, the studio, the evaluation encoders
NOT_IMPORTED_BY_TRAIN = ("fastapi", "uvicorn", "hubtools.localhub", "hubtools.studio", "hubtools.evaluation",
                         "hubtools.publish", "hubtools.card")

_CHILD = """
import json, runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None  # as if not installed: importing it fails, importlib.util.find_spec says None
report, sys.argv = sys.argv[1], ["hubtools", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("hubtools", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
with open(report, "w") as handle:
    json.dump({{"code": code, "modules": sorted(m for m, v in sys.modules.items() if v is not None)}}, handle)
"""


def test_train_runs_without_scipy_or_matplotlib_and_imports_nothing_it_does_not_use(tmp_path):
    import json
    import subprocess
    import sys

    from test_training_support import subprocess_env, tiny_base

    from hubtools.resources import DEMO_CONCEPT_DIR

    report, run = tmp_path / "modules.json", tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", _CHILD.format(blocked=NOT_NEEDED_TO_TRAIN), str(report), "train",
         "--base-model", str(tiny_base(tmp_path)), "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "pkblz",
         "--class-noun", "dog", "--method", "lora", "--steps", "2", "--resolution", "64", "--device", "cpu",
         "--no-prior", "--checkpoint-every", "0", "--out", str(run)],
        capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(report.read_text())
    assert child["code"] in (0, None), result.stderr[-3000:]
    assert (run / "pytorch_lora_weights.safetensors").is_file() and (run / "images" / "loss_curve.png").is_file()
    loaded = set(child["modules"])
    unused = {m for m in loaded for heavy in NOT_IMPORTED_BY_TRAIN if m == heavy or m.startswith(heavy + ".")}
    assert not unused, f"hubtools train imported what it does not use: {sorted(unused)}"
