"""What the Hub derives from a repo's files: the README's YAML metadata (cardData) and the repo's tags."""

from __future__ import annotations

import re
from typing import Any

import yaml

from hubtools.errors import first_line
from hubtools.formatting import as_text_list

# libyaml's loader when PyYAML was built with it: ~10x faster, which the index of a big hub notices.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class CardMetadataError(ValueError):
    """The README's YAML block does not parse, or is not a mapping."""


def parse_card_metadata(text: str) -> dict[str, Any] | None:
    """The YAML block at the top of a README, or None when there is none."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return None
    try:
        data = yaml.load(match.group(1), Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        raise CardMetadataError(f"Invalid YAML in the model card metadata: {first_line(error)}") from None
    except RecursionError:  # nesting a client sent to cost the server a traceback
        raise CardMetadataError("The model card metadata is nested too deeply.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardMetadataError("The model card metadata must be a YAML mapping (key: value pairs).")
    return data


def derive_tags(card: dict[str, Any] | None, paths: list[str]) -> tuple[list[str], str | None, str | None]:
    """(tags, library_name, pipeline_tag) the way the Hub builds them from the card and the file list."""
    card = card or {}
    library_name = card.get("library_name")
    if not library_name and "model_index.json" in paths:
        library_name = "diffusers"
    pipeline_tag = card.get("pipeline_tag")
    tags: list[str] = []
    for tag in as_text_list(card.get("tags")):
        tags.append(tag)
    if library_name:
        tags.append(str(library_name))
    if pipeline_tag:
        tags.append(str(pipeline_tag))
    if any(path.endswith(".safetensors") for path in paths):
        tags.append("safetensors")
    for license_name in as_text_list(card.get("license")):
        tags.append(f"license:{license_name}")
    for dataset in as_text_list(card.get("datasets")):
        tags.append(f"dataset:{dataset}")
    for base_model in as_text_list(card.get("base_model")):
        tags.append(f"base_model:{base_model}")
    for language in as_text_list(card.get("language")):
        tags.append(language)
    unique = list(dict.fromkeys(tags))
    return unique, (str(library_name) if library_name else None), (str(pipeline_tag) if pipeline_tag else None)
