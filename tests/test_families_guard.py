"""Outside ``hubtools/families/`` no family name or pipeline class name appears in the code: help texts and
messages are built from the registry, and the stages ask the family, never which one it is. So adding a
family is its module, one registry line and its tests. Docstrings and comments may still name families."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hubtools
from hubtools.families import FAMILIES

PACKAGE = Path(hubtools.__file__).parent
FAMILIES_DIR = PACKAGE / "families"


def _docstring_ids(tree: ast.AST) -> set[int]:
    """The string constants that are statements of their own: docstrings (and strings used as comments)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _code_words(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, kind, text) of every string literal (f-string parts included) and identifier of the code."""
    skipped = _docstring_ids(tree)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            found.append((node.lineno, "string", node.value))
        elif isinstance(node, ast.Name):
            found.append((node.lineno, "name", node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, "name", node.attr))
        elif isinstance(node, ast.alias):
            found.append((node.lineno, "name", node.name.split(".")[-1]))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.lineno, "name", node.name))
    return found


def _patterns() -> list[tuple[str, re.Pattern]]:
    patterns = []
    for family in FAMILIES:
        # a family's name as a word of a string ("sd", but not the "sd" in "sd-scripts" or "lora_sd_x")
        patterns.append((f"family name {family.name!r}", re.compile(rf"(?<![\w./-]){re.escape(family.name)}(?![\w/-])")))
        patterns.append((f"pipeline class {family.pipeline_class_name}",
                         re.compile(rf"\b{re.escape(family.pipeline_class_name)}\b")))
    return patterns


def family_mentions(root: Path = PACKAGE) -> list[str]:
    """``file:line: what`` for every family name or pipeline class name in the code outside families/."""
    patterns = _patterns()
    hits = []
    for path in sorted(root.rglob("*.py")):
        if FAMILIES_DIR in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, kind, text in _code_words(tree):
            for what, pattern in patterns:
                if pattern.search(text):
                    hits.append(f"{path.relative_to(root.parent)}:{line}: {what} in a {kind}: {text[:60]!r}")
    return sorted(set(hits))


def test_no_family_is_named_outside_the_families_package():
    hits = family_mentions()
    assert not hits, "a family is named outside hubtools/families/ (build it from the registry):\n" + "\n".join(hits)


def test_the_guard_finds_a_family_name(tmp_path):
    """The guard itself works: a module naming a family in a string, or a pipeline class, is found."""
    package = tmp_path / "hubtools"
    package.mkdir()
    family = FAMILIES[-1]
    (package / "stage.py").write_text(
        '"""Docstrings may name them: ' + family.pipeline_class_name + '."""\n'
        f'CHOICES = "use {family.name} here"\n'
        f"from diffusers import {family.pipeline_class_name}\n", encoding="utf-8")
    hits = family_mentions(package)
    assert [hit.split(": ")[0] for hit in hits] == ["hubtools/stage.py:2", "hubtools/stage.py:3"], hits
