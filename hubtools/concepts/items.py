"""What a concept source yields, wherever it is (a local folder or a Hub dataset): the items prepare reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class SourceItem:
    path: str | None  # relative path (folder) or original file name (dataset row), for people
    row: int | None = None
    data: bytes | None = None
    caption: str | None = None
    ignored_reason: str | None = None  # not a photo: report and skip
    rejected_reason: str | None = None  # meant as a photo but could not even be read


@dataclass
class ResolvedSource:
    """What ``prepare`` reads: a description for the manifest and the items themselves."""

    source: str  # absolute folder path, or the Hub repo id
    source_revision: str | None  # commit sha for the Hub
    items: list[SourceItem] | Iterator[SourceItem]
    total: int | None
    image_column: str | None = None
