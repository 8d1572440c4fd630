"""The prepare stage: any reasonable set of photos in, a clean training folder and a verdict per file out.

Deterministic: the same input gives byte-identical images, metadata.jsonl and contact sheet (the
manifest differs only in ``created_at``, which honours ``SOURCE_DATE_EPOCH``). The source is only read.
The output folder is built beside its destination and swapped in whole, so a failed run never leaves
half a folder behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from hubtools.atomic import replace_dir
from hubtools.concepts.buckets import (
    DEFAULT_SIZE_MULTIPLE, Bucket, covers, fit_to_bucket, nearest_bucket, resolve_buckets, scale_box,
)
from hubtools.concepts.captions import CaptionRules
from hubtools.concepts.contact_sheet import render_contact_sheet
from hubtools.concepts.dedupe import PerceptualHash, perceptual_hash
from hubtools.concepts.files import CROP_MODES, RejectedImage, fit_to_square, read_image, sha256_of
from hubtools.concepts.manifest import (
    CONTACT_SHEET_FILENAME,
    IMAGES_DIRNAME,
    MANIFEST_FILENAME,
    METADATA_FILENAME,
    ManifestEntry,
    PreparedConcept,
    count_statuses,
    write_manifest,
    write_metadata,
)
from hubtools.concepts.items import ResolvedSource
from hubtools.concepts.sources import resolve_source
from hubtools.errors import ConfigError, InputError
from hubtools.reporting import Reporter, reporter_or_silent

# zlib level 3: a third of the default's encode time for ~7% larger PNGs (encoding dominated prepare).
PNG_COMPRESS_LEVEL = 3


class ConceptNotUsableError(InputError):
    """Too few images were accepted (or one was rejected under ``strict``). The folder was still written:
    ``concept`` is there so the CLI can show the table of what happened to each file."""

    def __init__(self, message: str, concept: PreparedConcept) -> None:
        super().__init__(message)
        self.concept = concept


@dataclass
class _Kept:
    entry_index: int
    hash: PerceptualHash
    pixels: int
    staged: Path


def prepare_concept(
    source: str | Path,
    out_dir: Path | str,
    *,
    resolution: int = 512,
    caption: str | None = None,
    min_images: int = 1,
    strict: bool = False,
    allow_upscale: bool = False,
    image_column: str | None = None,
    crop: str = "center",
    token: str | None = None,
    progress: bool = True,
    hub_only: bool = False,
    buckets: str | None = "auto",
    size_multiple: int = DEFAULT_SIZE_MULTIPLE,
    captions: CaptionRules | None = None,
    reporter: Reporter | None = None,
) -> PreparedConcept:
    """Prepare a concept folder from a local folder or a Hub dataset ``namespace/name[@revision]``.

    An existing local path wins over a Hub id, unless ``hub_only`` (what ``concept pull`` does).
    ``buckets`` is ``auto`` (aspect-ratio buckets of about ``resolution``² pixels, sides multiples of
    ``size_multiple``), ``off`` (the centre square) or a list ``"WxH,WxH"``. ``captions`` are the
    caption template and trigger-word rules (default: captions as the source has them).
    Progress goes to ``reporter`` (none: silent; ``progress=False`` drops only the progress events).

    Raises ``ConceptNotUsableError`` (an ``InputError``) after writing the folder when fewer than
    ``min_images`` were accepted, or under ``strict`` when anything was rejected.
    """
    if resolution < 8:
        raise ConfigError(f"resolution must be at least 8 px, got {resolution}")
    if crop not in CROP_MODES:
        raise ConfigError(f"unknown crop {crop!r}; use one of {', '.join(CROP_MODES)}")
    if min_images < 1:
        raise ConfigError(f"min_images must be at least 1, got {min_images}")
    bucket_list = resolve_buckets(buckets, resolution, size_multiple)
    captions = captions or CaptionRules()
    captions.check()
    out_dir = Path(out_dir).expanduser().resolve()
    local_src = Path(source).expanduser()
    if local_src.exists() and not hub_only:
        _check_out_dir_against_source(out_dir, local_src.resolve())
    _check_out_dir_replaceable(out_dir)
    if hub_only:
        from hubtools.concepts.hub import hub_dataset_source
        from hubtools.config import parse_hub_ref

        hub_id = parse_hub_ref(str(source))
        if hub_id is None:
            raise InputError(f"{source} is not a Hub dataset id; use namespace/name[@revision]")
        resolved = hub_dataset_source(hub_id[0], revision=hub_id[1], image_column=image_column, token=token)
    else:
        resolved = resolve_source(source, image_column=image_column, token=token)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.preparing-", dir=out_dir.parent))
    try:
        concept = _prepare_into(
            resolved, staging, resolution=resolution, caption=caption, allow_upscale=allow_upscale,
            crop=crop, reporter=reporter_or_silent(reporter, progress=progress), buckets=bucket_list,
            caption_rules=captions,
        )
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    concept = _relocate(concept, staging, out_dir)

    accepted = concept.counts["accepted"]
    if accepted < min_images:
        raise ConceptNotUsableError(
            f"only {accepted} usable image{'s' if accepted != 1 else ''} in {source} (need {min_images}); "
            f"{CONTACT_SHEET_FILENAME} and {MANIFEST_FILENAME} in {concept.dir} say why each file was left out",
            concept,
        )
    if strict and concept.counts["rejected"]:
        raise ConceptNotUsableError(
            f"{concept.counts['rejected']} file(s) rejected and --strict is set; fix or remove them "
            f"(reasons in {concept.manifest_path})",
            concept,
        )
    return concept


def _check_out_dir_against_source(out_dir: Path, src: Path) -> None:
    if out_dir == src or src in out_dir.parents or out_dir in src.parents:
        raise InputError(f"--out {out_dir} overlaps the source folder {src}; choose an output folder outside it")


def _check_out_dir_replaceable(out_dir: Path) -> None:
    # Only an empty folder or an earlier prepared concept may be replaced: never a user's photo folder.
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; choose a folder path")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILENAME).is_file():
        raise InputError(f"--out {out_dir} exists and is not a prepared concept folder; choose a new or empty folder")


def _relocate(concept: PreparedConcept, staging: Path, out_dir: Path) -> PreparedConcept:
    def moved(path: Path) -> Path:
        return out_dir / path.relative_to(staging)

    concept.dir = out_dir
    concept.images = [moved(path) for path in concept.images]
    concept.manifest_path = moved(concept.manifest_path)
    concept.metadata_path = moved(concept.metadata_path)
    concept.contact_sheet_path = moved(concept.contact_sheet_path)
    return concept


def _created_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else datetime.now(timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _prepare_into(
    resolved: ResolvedSource,
    staging: Path,
    *,
    resolution: int,
    caption: str | None,
    allow_upscale: bool,
    crop: str,
    reporter: Reporter,
    buckets: list[Bucket] | None = None,
    caption_rules: CaptionRules | None = None,
) -> PreparedConcept:
    caption_rules = caption_rules or CaptionRules()
    images_dir = staging / IMAGES_DIRNAME
    images_dir.mkdir()
    entries: list[ManifestEntry] = []
    kept: list[_Kept] = []
    by_sha: dict[str, int] = {}  # input sha256 -> entry index of the first copy
    thumbnails: dict[int, Image.Image] = {}  # decoded but unused inputs, for the contact sheet
    duplicate_hashes: dict[int, PerceptualHash] = {}  # near duplicates by entry index, to re-point when needed

    for item in _with_progress(resolved, reporter):
        index = len(entries)
        entry = ManifestEntry(status="ignored", reason="", path=item.path, row=item.row)
        entries.append(entry)
        if item.ignored_reason is not None:
            entry.reason = item.ignored_reason
            continue
        if item.rejected_reason is not None or item.data is None:
            entry.status, entry.reason = "rejected", item.rejected_reason or "no image data"
            continue
        entry.sha256 = sha256_of(item.data)
        if entry.sha256 in by_sha:
            first = entries[by_sha[entry.sha256]]
            entry.status, entry.duplicate_of = "duplicate", first.label
            entry.reason = f"identical file to {first.label}"
            continue
        by_sha[entry.sha256] = index
        try:
            read = read_image(item.data, name=item.path or "", min_side=resolution)
        except RejectedImage as error:
            entry.status, entry.reason = "rejected", str(error)
            continue
        notes = read.notes
        width, height = read.original_size
        entry.original_size = [width, height]
        bucket = nearest_bucket((width, height), buckets) if buckets else None
        if bucket is None and min(width, height) < resolution or bucket is not None and not covers((width, height), bucket):
            if not allow_upscale:
                entry.status = "rejected"
                entry.reason = (
                    f"too small: {width}x{height}, the shorter side must be at least {resolution} px "
                    "(or pass --allow-upscale)" if bucket is None else
                    f"too small: {width}x{height} does not cover its bucket {bucket.label} (or pass --allow-upscale)"
                )
                thumbnails[index] = _thumbnail(read.image)
                continue
            notes.append(f"warning: upscaled from {width}x{height}, may look soft")
        elif bucket is not None and not covers(read.image.size, bucket):
            # a JPEG decoded at a reduced scale that no longer covers its (wider) bucket: decode it larger
            read = read_image(item.data, name=item.path or "", min_side=max(bucket.width, bucket.height))
        image_hash = perceptual_hash(read.image)
        twin = next((k for k in kept if k.hash.is_near(image_hash)), None)
        if bucket is None:
            processed = fit_to_square(read.image, resolution, crop)
        else:
            processed, box = fit_to_bucket(read.image, bucket, crop)
            entry.bucket = bucket.as_list()
            entry.crop_box = scale_box(box, read.image.size, (width, height))
        if twin is not None and width * height <= twin.pixels:
            kept_entry = entries[twin.entry_index]
            entry.status, entry.duplicate_of = "duplicate", kept_entry.label
            entry.reason = f"near duplicate of {kept_entry.label} (perceptual hash distance {twin.hash.distance(image_hash)}/64)"
            entry.bucket = entry.crop_box = None
            thumbnails[index] = _thumbnail(processed)
            duplicate_hashes[index] = image_hash
            continue
        staged = images_dir / f"staged-{index:06d}.png"
        processed.save(staged, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        entry.status = "accepted"
        entry.reason = "; ".join(notes) if notes else "ok"
        entry.caption, entry.caption_warning = caption_rules.apply(item.caption, caption or "")
        if twin is not None:
            # The new copy is larger: keep it, and demote the earlier, smaller one.
            old = entries[twin.entry_index]
            old.status, old.duplicate_of, old.caption = "duplicate", entry.label, None
            old.bucket = old.crop_box = old.caption_warning = None
            old.reason = f"near duplicate of the larger {entry.label} (perceptual hash distance {twin.hash.distance(image_hash)}/64)"
            duplicate_hashes[twin.entry_index] = twin.hash
            for other, other_hash in duplicate_hashes.items():  # those that pointed at the demoted copy: the kept one
                if other != twin.entry_index and entries[other].duplicate_of == old.label:
                    entries[other].duplicate_of = entry.label
                    entries[other].reason = (f"near duplicate of {entry.label} (perceptual hash distance "
                                             f"{other_hash.distance(image_hash)}/64)")
            with Image.open(twin.staged) as previous:
                thumbnails[twin.entry_index] = _thumbnail(previous.convert("RGB"))
            twin.staged.unlink()
            kept.remove(twin)
        kept.append(_Kept(index, image_hash, width * height, staged))

    # Final names follow input order, so they do not depend on which twin was seen first.
    kept.sort(key=lambda k: k.entry_index)
    images: list[Path] = []
    captions: list[str] = []
    for number, item in enumerate(kept):
        final = images_dir / f"{number:04d}.png"
        os.replace(item.staged, final)
        entry = entries[item.entry_index]
        entry.output = f"{IMAGES_DIRNAME}/{final.name}"
        images.append(final)
        captions.append(entry.caption or "")

    concept = PreparedConcept(
        dir=staging,
        images=images,
        captions=captions,
        manifest_path=staging / MANIFEST_FILENAME,
        contact_sheet_path=staging / CONTACT_SHEET_FILENAME,
        metadata_path=staging / METADATA_FILENAME,
        source=resolved.source,
        source_revision=resolved.source_revision,
        resolution=resolution,
        counts=count_statuses(entries),
        entries=entries,
        crop=crop,
        image_column=resolved.image_column,
        created_at=_created_at(),
        buckets=[bucket.as_list() for bucket in buckets] if buckets else None,
        caption_template=caption_rules.template,
    )
    write_metadata(concept)
    render_contact_sheet(concept, concept.contact_sheet_path, thumbnails)
    write_manifest(concept)
    return concept


def _thumbnail(image: Image.Image) -> Image.Image:
    thumb = image.convert("RGB")
    thumb.thumbnail((160, 160), Image.Resampling.LANCZOS)
    return thumb


def _with_progress(resolved: ResolvedSource, reporter: Reporter):
    for done, item in enumerate(resolved.items, start=1):
        yield item
        reporter.progress("preparing images", done, resolved.total or done)


__all__ = ["ConceptNotUsableError", "prepare_concept"]
