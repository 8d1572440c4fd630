"""Model families: everything that differs between the model families hubtools trains, behind one interface
(``base.Family``), one module per family, and the registry below: the one list of them. The family of a base
model is read from its ``model_index.json`` (``_class_name``), never asked of the user. Importing this package
does not import torch: the training operations import it when they run.
"""

from __future__ import annotations

from typing import Any

from hubtools.errors import ConfigError
from hubtools.families.base import Conditioning, Family, License, MemoryProfile, NoisyBatch, SamplingDefaults
from hubtools.families.flux import Flux
from hubtools.families.flux2 import Flux2, Flux2Klein
from hubtools.families.qwen_image import QwenImage
from hubtools.families.sd import StableDiffusion
from hubtools.families.sd3 import StableDiffusion3
from hubtools.families.sdxl import StableDiffusionXL
from hubtools.families.zimage import ZImage

# The registry: the one list of families. Help texts, messages, the tiny models a hub serves and the demo's
# choices are built from it. The first is the default of the demo and the tiny model.
FAMILIES: tuple[Family, ...] = (
    StableDiffusion(), StableDiffusionXL(), Flux(), StableDiffusion3(), QwenImage(), ZImage(), Flux2(), Flux2Klein(),
)
DEFAULT_FAMILY: Family = FAMILIES[0]
_BY_CLASS = {family.pipeline_class_name: family for family in FAMILIES}
_BY_NAME = {family.name: family for family in FAMILIES}


class UnsupportedModelError(ConfigError):
    """A base model whose pipeline class no family handles."""


def supported() -> str:
    """The supported families in words, for messages."""
    return ", ".join(f"{family.title} ({family.pipeline_class_name})" for family in FAMILIES)


def names() -> tuple[str, ...]:
    """Every family's name, as configs, results and the command line say it."""
    return tuple(_BY_NAME)


def _in_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def names_in_words() -> str:
    """"a, b or c": the families' names, for help texts."""
    return _in_words(list(_BY_NAME))


def titles_in_words() -> str:
    """The families' titles, for help texts ("... or ...")."""
    return _in_words([family.title for family in FAMILIES])


def detect(model_index: dict[str, Any], *, source: str = "the base model") -> Family:
    """The family of a pipeline from its ``model_index.json``; any other class is a ``ConfigError``."""
    class_name = model_index.get("_class_name")
    family = _BY_CLASS.get(class_name)
    if family is None:
        raise UnsupportedModelError(f"{source} is a {class_name or 'pipeline of unknown class'}, which hubtools cannot train: "
                          f"use a base model of a supported family: {supported()}")
    return family


def by_name(name: str) -> Family:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}: choose {names_in_words()}") from None


def apply_family_defaults(cfg, family: Family, denoiser_config: dict[str, Any]):
    """A copy of ``cfg`` (a ``RunConfig``) with the family's defaults for the settings the user left unset
    (SDXL and FLUX.1: 1024 px, their guidance and steps; FLUX.1: LoRA). Set values, and every value of a
    config read back from a run folder (all written out), are kept."""
    updated = cfg.model_copy(deep=True)
    for dotted, value in family.config_defaults(denoiser_config).items():
        section_name, key = dotted.split(".")
        section = getattr(updated, section_name)
        if key not in section.model_fields_set:
            setattr(section, key, value)
    return updated


def of_pipeline(pipeline) -> Family:
    """The family of a loaded pipeline."""
    return detect({"_class_name": type(pipeline).__name__}, source=f"pipeline {type(pipeline).__name__}")


__all__ = [
    "DEFAULT_FAMILY", "FAMILIES", "Conditioning", "Family", "Flux", "Flux2", "Flux2Klein", "License", "MemoryProfile", "NoisyBatch",
    "QwenImage", "SamplingDefaults", "StableDiffusion", "StableDiffusion3", "StableDiffusionXL",
    "UnsupportedModelError", "apply_family_defaults", "by_name", "detect", "names", "names_in_words", "of_pipeline",
    "supported", "titles_in_words", "ZImage",
]
