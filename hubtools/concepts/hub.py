"""Concept sets as Hub dataset repositories: push a prepared folder, read one back as a source.

Pushing uses ``datasets.Dataset.push_to_hub`` (parquet with an ``image`` and a ``text`` column, what
``load_dataset`` and the DreamBooth hackathon expect), then one commit adds the dataset card, the contact
sheet and the manifest. Reading resolves the revision to a commit sha first and loads exactly that
commit, so the model card can cite the data it was trained on. ``datasets`` caches what it downloads,
so preparing the same source twice does not download twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubtools.concepts.manifest import (
    CONTACT_SHEET_FILENAME,
    MANIFEST_FILENAME,
    PreparedConcept,
    load_prepared_concept,
    manifest_dict,
)
from hubtools.concepts.items import ResolvedSource, SourceItem
from hubtools.config import check_repo_id
from hubtools.errors import HubError, InputError, first_line
from hubtools.hub_errors import hub_errors

DATASET_CARD_TEMPLATE = "dataset_card.md.j2"
TEXT_COLUMN_CANDIDATES = ("text", "caption", "prompt", "instance_prompt")
_PUSH_HINTS = {403: "no write access to that namespace"}


def hub_dataset_source(
    repo_id: str, *, revision: str | None = None, image_column: str | None = None, token: str | None = None
) -> ResolvedSource:
    """Rows of a Hub dataset as ``SourceItem``s, at the commit ``revision`` resolves to."""
    sha = resolve_dataset_revision(repo_id, revision=revision, token=token)
    split = _load_split(repo_id, sha, token)
    column = detect_image_column(split, image_column, repo_id)
    text_column = _detect_text_column(split)

    import datasets

    # Raw bytes, not decoded PIL images: the safe reader (bomb limits, EXIF...) does the decoding.
    split = split.cast_column(column, datasets.Image(decode=False))
    split = split.select_columns([column] + ([text_column] if text_column else []))
    return ResolvedSource(
        source=repo_id,
        source_revision=sha,
        items=_rows(split, column, text_column),
        total=len(split),
        image_column=column,
    )


def resolve_dataset_revision(repo_id: str, *, revision: str | None = None, token: str | None = None) -> str:
    from huggingface_hub import HfApi

    with hub_errors(f"dataset {repo_id}", token=token, missing=InputError, revision=revision):
        info = HfApi().dataset_info(repo_id, revision=revision, token=token)
    if not info.sha:
        raise HubError(f"the Hub did not report a commit for dataset {repo_id}")
    return info.sha


def _load_split(repo_id: str, sha: str, token: str | None) -> Any:
    import datasets

    try:
        loaded = datasets.load_dataset(repo_id, revision=sha, token=token)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        detail = first_line(error)
        raise InputError(f"cannot load dataset {repo_id}@{sha[:12]} as images ({detail})") from None
    if "train" in loaded:
        return loaded["train"]
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    raise InputError(f"dataset {repo_id} has splits {', '.join(loaded)} and no 'train' split; publish the images as 'train'")


def detect_image_column(split: Any, image_column: str | None, repo_id: str) -> str:
    """The ``datasets.Image`` column, or the one the user named."""
    import datasets

    features = split.features
    if image_column is not None:
        if image_column not in features:
            raise InputError(
                f"dataset {repo_id} has no column {image_column!r} (columns: {', '.join(features)}); fix --image-column"
            )
        feature = features[image_column]
        if not isinstance(feature, datasets.Image) and getattr(feature, "dtype", None) not in ("binary", "large_binary"):
            raise InputError(f"column {image_column!r} of {repo_id} does not hold images ({feature}); pick another --image-column")
        return image_column
    image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(image_columns) == 1:
        return image_columns[0]
    if not image_columns:
        raise InputError(f"dataset {repo_id} has no image column (columns: {', '.join(features)}); pass --image-column")
    raise InputError(f"dataset {repo_id} has several image columns ({', '.join(image_columns)}); pick one with --image-column")


def _detect_text_column(split: Any) -> str | None:
    for name in TEXT_COLUMN_CANDIDATES:
        feature = split.features.get(name)
        if feature is not None and getattr(feature, "dtype", None) in ("string", "large_string"):
            return name
    return None


def _rows(split: Any, column: str, text_column: str | None) -> Iterator[SourceItem]:
    for row_index, row in enumerate(split):
        value = row[column]
        item = SourceItem(path=None, row=row_index)
        if text_column and isinstance(row.get(text_column), str):
            item.caption = row[text_column]
        if isinstance(value, dict):
            item.path = Path(value["path"]).name if value.get("path") else None
            data = value.get("bytes")
            if data is None and value.get("path") and Path(value["path"]).is_file():
                data = Path(value["path"]).read_bytes()  # imagefolder repos: the file is in the cache
            item.data = data
        elif isinstance(value, (bytes, bytearray)):
            item.data = bytes(value)
        if item.data is None:
            item.rejected_reason = "row has no image data"
        yield item


def push_concept(
    dir: Path | str,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    identifier: str | None = None,
    class_noun: str | None = None,
    license: str = "cc-by-4.0",
) -> str:
    """Publish a prepared concept folder as dataset ``repo_id``; returns the repo URL."""
    check_repo_id(repo_id, "dataset")
    concept = load_prepared_concept(dir)
    if not concept.images:
        raise InputError(f"{concept.dir} has no accepted images to push; prepare a set with usable photos first")

    import datasets
    from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi

    table = datasets.Dataset.from_dict(
        {"image": [str(path) for path in concept.images], "text": concept.captions},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )
    api = HfApi()
    previous_export = datasets.config.USE_PARQUET_EXPORT
    datasets.config.USE_PARQUET_EXPORT = False  # the data is parquet already; no export job to wait for
    try:
        with hub_errors(f"dataset {repo_id}", action="push", token=token, missing=None, status_hints=_PUSH_HINTS):
            table.push_to_hub(repo_id, private=private, token=token, commit_message="Concept images from hubtools")
            # push_to_hub wrote a card with the dataset_info/configs YAML; keep it and add ours around it.
            existing = DatasetCard.load(repo_id, repo_type="dataset", token=token)
            card_data = DatasetCardData(**existing.data.to_dict())
            card_data.license = license
            card_data.task_categories = ["text-to-image"]
            card_data.tags = sorted(set((card_data.get("tags") or []) + ["dreambooth", "hubtools", "concept"]))
            card_data.pretty_name = _pretty_name(repo_id, identifier, class_noun)
            card_data.size_categories = ["n<1K"] if concept.num_images < 1000 else ["1K<n<10K"]
            card = DatasetCard.from_template(card_data, template_path=str(_template_path()), **_card_values(concept, repo_id, identifier, class_noun, license))
            public_manifest = manifest_dict(concept)
            public_manifest["source"] = concept.public_source  # no local home-folder paths on the Hub
            operations = [
                CommitOperationAdd("README.md", str(card).encode("utf-8")),
                CommitOperationAdd(MANIFEST_FILENAME, (json.dumps(public_manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
            ]
            if concept.contact_sheet_path.is_file():
                operations.append(CommitOperationAdd(CONTACT_SHEET_FILENAME, str(concept.contact_sheet_path)))
            commit = api.create_commit(
                repo_id, operations, repo_type="dataset", token=token, commit_message="Dataset card and contact sheet from hubtools"
            )
    finally:
        datasets.config.USE_PARQUET_EXPORT = previous_export
    return str(commit.repo_url)


def _template_path() -> Path:
    from hubtools.resources import TEMPLATES_DIR

    return Path(TEMPLATES_DIR) / DATASET_CARD_TEMPLATE


def _pretty_name(repo_id: str, identifier: str | None, class_noun: str | None) -> str:
    if identifier and class_noun:
        return f"{identifier} {class_noun} (DreamBooth concept)"
    return repo_id.split("/")[-1]


def _card_values(
    concept: PreparedConcept, repo_id: str, identifier: str | None, class_noun: str | None, license: str
) -> dict[str, Any]:
    if concept.source_revision:
        source_description = f"[{concept.source}](/datasets/{concept.source}) at commit `{concept.source_revision[:12]}`"
    else:
        source_description = f"photos from a local folder ({concept.counts.get('total', 0)} files)"
    return {
        "repo_id": repo_id,
        "identifier": identifier,
        "class_noun": class_noun,
        "instance_prompt": f"a photo of {identifier} {class_noun}" if identifier and class_noun else None,
        "num_images": concept.num_images,
        "resolution": concept.resolution,
        "crop": concept.crop,
        "license": license,
        "source_description": source_description,
        "contact_sheet": CONTACT_SHEET_FILENAME,
        "counts": concept.counts,
        "buckets": concept.bucket_counts() if concept.has_shapes else None,
        "caption_template": concept.caption_template,
    }
