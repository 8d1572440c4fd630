"""Captions and the trigger word: the caption template, the identifier check, and kohya's caption dropout
and part shuffling.

The identifier is the trigger word: a caption that lacks it teaches the subject under other words, so each
such caption gets a warning in the manifest (or, with ``prepend_identifier``, the identifier in front, as
kohya-ss users do). Dropout and shuffling happen per training step, from a generator seeded by the step,
so a resumed run draws the same captions.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

from hubtools.errors import ConfigError

TEMPLATE_FIELDS = frozenset({"identifier", "class_noun", "caption"})
PART_SEPARATOR = ","


@dataclass
class CaptionRules:
    """How a source's own captions become training captions."""

    template: str | None = None  # e.g. "a photo of {identifier} {class_noun}, {caption}"
    identifier: str | None = None
    class_noun: str | None = None
    prepend_identifier: bool = False

    def check(self) -> None:
        """A template naming anything but {identifier}, {class_noun} and {caption} is a ``ConfigError``."""
        if self.template is None:
            return
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        except ValueError as error:
            raise ConfigError(f"--caption-template {self.template!r} is not a valid template ({error})") from None
        unknown = names - TEMPLATE_FIELDS
        if unknown:
            raise ConfigError(f"--caption-template names {{{sorted(unknown)[0]}}}; use only {{identifier}}, "
                              "{class_noun} and {caption}")
        if "caption" not in names:
            raise ConfigError("--caption-template has no {caption}: each image's own caption would be lost; "
                              "add {caption}, or use --caption for one caption for every image")
        if ({"identifier", "class_noun"} & names) and not (self.identifier and self.class_noun):
            raise ConfigError("--caption-template uses {identifier}/{class_noun}: set --identifier and --class-noun")

    def apply(self, raw: str | None, default: str) -> tuple[str, str | None]:
        """(caption, warning): the source's caption through the template, or ``default`` when it has none."""
        if raw is None or not raw.strip():
            caption = default
        elif self.template is not None:
            caption = self.template.format(identifier=self.identifier or "", class_noun=self.class_noun or "",
                                           caption=raw.strip())
        else:
            caption = raw
        if not self.identifier or not caption or has_identifier(caption, self.identifier):
            return caption, None
        if self.prepend_identifier:
            return f"{self.identifier}{PART_SEPARATOR} {caption}", None
        return caption, f"caption lacks the identifier {self.identifier!r} (or pass --prepend-identifier)"


def has_identifier(caption: str, identifier: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(identifier)}(?!\w)", caption) is not None


def shuffle_parts(caption: str, rng: random.Random) -> str:
    """kohya's ``shuffle_caption`` with ``keep_tokens=1``: the comma-separated parts after the first, shuffled."""
    parts = [part.strip() for part in caption.split(PART_SEPARATOR)]
    if len(parts) < 3:
        return caption
    rest = parts[1:]
    rng.shuffle(rest)
    return f"{PART_SEPARATOR} ".join([parts[0], *rest])


def training_caption(caption: str, rng: random.Random, *, dropout: float, shuffle: bool) -> str:
    """The caption a step trains on: empty with probability ``dropout`` (the model keeps an unconditional
    sense of the subject), else with its parts shuffled when ``shuffle``."""
    if dropout and rng.random() < dropout:
        return ""
    return shuffle_parts(caption, rng) if shuffle else caption


__all__ = ["CaptionRules", "has_identifier", "shuffle_parts", "training_caption"]
