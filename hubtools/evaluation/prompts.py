"""Evaluation prompts: DreamBench's lists (shipped, CC-BY-4.0, see hubtools/data/dreambench) or a user file.

Prompts are kept as templates with ``{identifier}`` and ``{class_noun}`` (the placeholders the run config
uses) and filled in for the run being evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hubtools.errors import InputError
from hubtools.resources import DREAMBENCH_PROMPTS_FILE

DREAMBENCH = "dreambench"

# DreamBench's live subjects are its cats and dogs; other living class nouns get the same list, whose
# prompts (outfits, hats) make sense for them where the object list's do not.
LIVE_CLASS_NOUNS = frozenset({
    "dog", "cat", "puppy", "kitten", "pet", "animal", "person", "man", "woman", "boy", "girl", "child", "baby",
    "bird", "horse", "rabbit", "bunny", "hamster", "parrot", "pig", "cow", "sheep", "goat", "fox", "monkey",
})

_PROMPT_LINE = re.compile(r"""^\s*(['"])(?P<text>.*)\1\s*\.format\(\s*unique_token\s*,\s*class_token\s*\)""")


@dataclass(frozen=True)
class DreamBench:
    classes: dict[str, str]  # subject folder name -> class noun
    object_prompts: list[str]  # templates with {identifier} and {class_noun}
    live_prompts: list[str]


@dataclass(frozen=True)
class PromptSet:
    source: str  # "dreambench (live subjects)", "dreambench (objects)" or the file's path
    templates: list[str]

    def fill(self, identifier: str, class_noun: str) -> list[str]:
        return [fill_template(template, identifier, class_noun) for template in self.templates]


def fill_template(template: str, identifier: str, class_noun: str) -> str:
    return template.format(identifier=identifier, class_noun=class_noun)


def parse_dreambench(text: str) -> DreamBench:
    """Read DreamBench's ``prompts_and_classes.txt``: a subject,class table and two Python prompt lists."""
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        lowered = line.lower()
        if lowered == "classes":
            section = "classes"
        elif lowered == "object prompts":
            section = "object"
        elif lowered == "live subject prompts":
            section = "live"
        elif section == "classes" and "," in line and line != "subject_name,class":
            subject, _, class_noun = line.partition(",")
            classes[subject.strip()] = class_noun.strip()
        elif section in lists and (match := _PROMPT_LINE.match(line)):
            lists[section].append(match["text"].replace("{0}", "{identifier}").replace("{1}", "{class_noun}"))
    if not lists["object"] or not lists["live"]:
        raise InputError("the DreamBench prompt file has no object or live-subject prompt list; reinstall hubtools")
    return DreamBench(classes=classes, object_prompts=lists["object"], live_prompts=lists["live"])


@lru_cache(maxsize=1)
def shipped_dreambench() -> DreamBench:
    return parse_dreambench(DREAMBENCH_PROMPTS_FILE.read_text(encoding="utf-8"))


def is_live_subject(class_noun: str) -> bool:
    words = class_noun.lower().split()
    return bool(words) and words[-1].rstrip("s") in LIVE_CLASS_NOUNS


def dreambench_prompts(class_noun: str) -> PromptSet:
    """DreamBench's 25 prompts for this class: the live-subject list for animals and people, else objects."""
    bench = shipped_dreambench()
    if is_live_subject(class_noun):
        return PromptSet(f"{DREAMBENCH} (live subjects)", list(bench.live_prompts))
    return PromptSet(f"{DREAMBENCH} (objects)", list(bench.object_prompts))


def read_prompt_file(path: Path) -> PromptSet:
    """One prompt per line, ``{identifier}`` and ``{class_noun}`` filled in; blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file not found: {path} (pass --prompts dreambench or a text file, one prompt a line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"prompt file {path} is not UTF-8 text: save it as plain text, one prompt a line") from None
    templates = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fill_template(line, "x", "y")
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(
                f"{path}:{number}: only {{identifier}} and {{class_noun}} may appear in braces ({error}): {line!r}"
            ) from None
        templates.append(line)
    if not templates:
        raise InputError(f"prompt file {path} has no prompts: write one prompt a line, e.g. 'a {{identifier}} {{class_noun}} in the snow'")
    return PromptSet(str(path), templates)


def load_prompts(source: str, class_noun: str) -> PromptSet:
    """``dreambench`` or the path of a prompt file."""
    if source.strip().lower() == DREAMBENCH:
        return dreambench_prompts(class_noun)
    return read_prompt_file(Path(source).expanduser())
