"""The prepared concept folder's record of itself: ``manifest.json`` and the ``PreparedConcept`` view.

Layout of a prepared folder (a ``datasets`` imagefolder, so ``load_dataset("imagefolder", data_dir=DIR)``
reads it; files not named in metadata.jsonl, like the contact sheet, are skipped by that loader)::

    DIR/images/0000.png ...   RGB PNGs at their bucket's size (the training square with --buckets off)
    DIR/metadata.jsonl        {"file_name": "images/0000.png", "text": "<caption>"} per image
    DIR/manifest.json         what happened to every input, and where it came from
    DIR/contact_sheet.png     every image in a grid, rejected ones listed beside it
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubtools.atomic import write_text_atomic
from hubtools.errors import InputError

MANIFEST_FILENAME = "manifest.json"
METADATA_FILENAME = "metadata.jsonl"
CONTACT_SHEET_FILENAME = "contact_sheet.png"
IMAGES_DIRNAME = "images"
MANIFEST_VERSION = 1

Status = Literal["accepted", "rejected", "duplicate", "ignored"]
STATUSES: tuple[Status, ...] = ("accepted", "rejected", "duplicate", "ignored")


@dataclass
class ManifestEntry:
    """What happened to one input: a file (``path``) of a folder or a row (``row``) of a dataset."""

    status: Status
    reason: str
    path: str | None = None  # relative to the source folder (posix), or the row's original file name
    row: int | None = None  # row index in the Hub dataset's split
    output: str | None = None  # e.g. "images/0000.png", accepted only
    original_size: list[int] | None = None  # [width, height] after EXIF orientation
    sha256: str | None = None  # of the input bytes
    caption: str | None = None
    duplicate_of: str | None = None  # label of the kept input
    bucket: list[int] | None = None  # [width, height] trained at; None: the centre square (--buckets off)
    crop_box: list[int] | None = None  # [left, top, right, bottom] kept, in the original photo's pixels
    caption_warning: str | None = None  # e.g. the caption lacks the identifier

    @property
    def label(self) -> str:
        if self.path is not None and self.row is None:
            return self.path
        if self.row is not None:
            return f"row {self.row}" + (f" ({self.path})" if self.path else "")
        return "?"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestEntry:
        known = {name: data.get(name) for name in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class PreparedConcept:
    """A prepared concept folder, as written by ``prepare_concept`` or read by ``load_prepared_concept``."""

    dir: Path
    images: list[Path]  # accepted images in training order
    captions: list[str]  # one per image ("" when the source had none and no caption was given)
    manifest_path: Path
    contact_sheet_path: Path
    metadata_path: Path
    source: str  # the local folder (absolute) or the Hub dataset id
    source_revision: str | None  # commit sha when from the Hub, else None
    resolution: int
    counts: dict[str, int]
    entries: list[ManifestEntry] = field(default_factory=list)
    crop: str = "center"
    image_column: str | None = None
    created_at: str | None = None
    buckets: list[list[int]] | None = None  # the bucket list ([width, height] each); None: square crop
    caption_template: str | None = None

    @property
    def accepted_entries(self) -> list[ManifestEntry]:
        """The manifest entries of ``images``, in the same order."""
        by_output = {entry.output: entry for entry in self.entries if entry.status == "accepted" and entry.output}
        return [by_output.get(image.relative_to(self.dir).as_posix()) or ManifestEntry("accepted", "")
                for image in self.images]

    def bucket_counts(self) -> dict[str, int]:
        """Images per bucket ("WxH"), most common first; empty with --buckets off."""
        counts: dict[str, int] = {}
        for entry in self.accepted_entries:
            if entry.bucket:
                label = f"{entry.bucket[0]}x{entry.bucket[1]}"
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def has_shapes(self) -> bool:
        """Whether some image is not square: the set trains on buckets of several shapes (else as the square)."""
        return any(entry.bucket and entry.bucket[0] != entry.bucket[1] for entry in self.accepted_entries)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def source_is_hub(self) -> bool:
        return self.source_revision is not None

    @property
    def public_source(self) -> str:
        """The source as shown to others (contact sheet, dataset repo): a local folder by its name only."""
        return self.source if self.source_is_hub else f"local folder {Path(self.source).name}/"


def count_statuses(entries: list[ManifestEntry]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for entry in entries:
        counts[entry.status] += 1
    counts["total"] = len(entries)
    return counts


def manifest_dict(concept: PreparedConcept) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "source": concept.source,
        "source_revision": concept.source_revision,
        "image_column": concept.image_column,
        "resolution": concept.resolution,
        "crop": concept.crop,
        **({"buckets": concept.buckets} if concept.buckets else {}),
        **({"caption_template": concept.caption_template} if concept.caption_template else {}),
        "counts": concept.counts,
        "created_at": concept.created_at,
        "entries": [_entry_dict(entry) for entry in concept.entries],
    }


_OPTIONAL_FIELDS = ("bucket", "crop_box", "caption_warning")


def _entry_dict(entry: ManifestEntry) -> dict[str, Any]:
    """An entry as JSON; the bucket fields only where set, so a square-crop manifest reads as before."""
    data = asdict(entry)
    for name in _OPTIONAL_FIELDS:
        if data[name] is None:
            del data[name]
    return data


def write_manifest(concept: PreparedConcept) -> None:
    write_text_atomic(concept.manifest_path, json.dumps(manifest_dict(concept), indent=2, ensure_ascii=False) + "\n")


def write_metadata(concept: PreparedConcept) -> None:
    lines = [
        json.dumps({"file_name": image.relative_to(concept.dir).as_posix(), "text": caption}, ensure_ascii=False)
        for image, caption in zip(concept.images, concept.captions, strict=True)
    ]
    write_text_atomic(concept.metadata_path, "".join(line + "\n" for line in lines))


def load_prepared_concept(dir: Path | str) -> PreparedConcept:
    """Read a folder written by ``prepare_concept`` back (for the trainer, the card and ``push``)."""
    root = Path(dir).expanduser().resolve()
    manifest_path = root / MANIFEST_FILENAME
    metadata_path = root / METADATA_FILENAME
    if not manifest_path.is_file() or not metadata_path.is_file():
        raise InputError(
            f"{root} is not a prepared concept folder (no {MANIFEST_FILENAME} / {METADATA_FILENAME}); "
            "run `hubtools concept prepare SRC --out DIR` first"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in metadata_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        images = [root / row["file_name"] for row in rows]
        captions = [str(row.get("text") or "") for row in rows]
        entries = [ManifestEntry.from_dict(item) for item in manifest.get("entries", [])]
        resolution = int(manifest["resolution"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{root} has a damaged manifest or metadata file ({error}); prepare it again") from None
    missing = [image for image in images if not image.is_file()]
    if missing:
        raise InputError(f"{root} is missing {missing[0].relative_to(root)} listed in {METADATA_FILENAME}; prepare it again")
    return PreparedConcept(
        dir=root,
        images=images,
        captions=captions,
        manifest_path=manifest_path,
        contact_sheet_path=root / CONTACT_SHEET_FILENAME,
        metadata_path=metadata_path,
        source=str(manifest.get("source", "")),
        source_revision=manifest.get("source_revision"),
        resolution=resolution,
        counts=dict(manifest.get("counts") or count_statuses(entries)),
        entries=entries,
        crop=str(manifest.get("crop", "center")),
        image_column=manifest.get("image_column"),
        created_at=manifest.get("created_at"),
        buckets=manifest.get("buckets"),
        caption_template=manifest.get("caption_template"),
    )
