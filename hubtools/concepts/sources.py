"""Where concept images come from: a local folder, or a Hub dataset ``namespace/name[@revision]``.

Both yield the same ``SourceItem``s (bytes plus an optional caption), so preparation does not care.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from hubtools.concepts.files import CAPTION_FILES, SIDECAR_SUFFIX, FoundFile, walk_source
from hubtools.concepts.items import ResolvedSource, SourceItem
from hubtools.config import parse_hub_ref
from hubtools.errors import InputError

# A file bigger than this is not a photo anyone meant to train on; don't even read it.
MAX_FILE_BYTES = 256 * 1024 * 1024


def resolve_source(
    source: str | Path, *, image_column: str | None = None, token: str | None = None
) -> ResolvedSource:
    """An existing local path wins; otherwise ``ns/name[@rev]`` is a Hub dataset."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path} is a file; pass the folder that holds the photos")
        return local_folder_source(path.resolve())
    hub_id = parse_hub_ref(str(source))
    if hub_id is None:
        raise InputError(f"{source} is neither an existing folder nor a Hub dataset id like namespace/name[@revision]")
    from hubtools.concepts.hub import hub_dataset_source  # datasets is slow to import; only when needed

    repo_id, revision = hub_id
    return hub_dataset_source(repo_id, revision=revision, image_column=image_column, token=token)


def local_folder_source(root: Path) -> ResolvedSource:
    found = walk_source(root)
    captions = _read_sidecar_captions(found)
    captions.update(_read_caption_files(root, found))  # read first: a broken captions file fails fast
    return ResolvedSource(source=str(root), source_revision=None, items=_local_items(found, captions), total=len(found))


def _local_items(found: list[FoundFile], captions: dict[str, str]) -> Iterator[SourceItem]:
    # One file's bytes in memory at a time, however large the folder.
    for file in found:
        item = SourceItem(path=file.rel_path, ignored_reason=file.ignored_reason, caption=captions.get(file.rel_path))
        if item.ignored_reason is None:
            try:
                size = file.path.stat().st_size
                if size > MAX_FILE_BYTES:
                    item.rejected_reason = f"file too large ({size / 2**20:.0f} MiB); photos are far smaller"
                else:
                    item.data = file.path.read_bytes()
            except OSError as error:
                item.rejected_reason = f"unreadable file ({error.strerror or error})"
        yield item


def _read_sidecar_captions(found: list[FoundFile]) -> dict[str, str]:
    """kohya's convention: ``photo.txt`` beside ``photo.jpg`` holds its caption. The sidecar is marked as
    used (not an ignored stray file); a metadata file naming the same image wins over it."""
    images = {Path(file.rel_path).with_suffix("").as_posix(): file.rel_path
              for file in found if file.ignored_reason is None}
    captions: dict[str, str] = {}
    for file in found:
        if Path(file.rel_path).suffix.lower() != SIDECAR_SUFFIX or file.ignored_reason is None:
            continue
        image = images.get(Path(file.rel_path).with_suffix("").as_posix())
        if image is None:
            continue
        try:
            text = file.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read caption file {file.rel_path} ({error}); fix or remove it") from None
        captions[image] = " ".join(text.split())  # one line, however the editor wrapped it
        file.ignored_reason = f"caption of {Path(image).name} (used)"
    return captions


def _read_caption_files(root: Path, found: list[FoundFile]) -> dict[str, str]:
    """``metadata.jsonl``/``metadata.csv`` ``text`` columns, keyed by image path relative to ``root``."""
    captions: dict[str, str] = {}
    for file in found:
        name = Path(file.rel_path).name
        if name.lower() not in CAPTION_FILES:
            continue
        base = Path(file.rel_path).parent
        for file_name, text in _caption_rows(file.path, file.rel_path):
            captions[(base / file_name).as_posix()] = text
    return captions


def _caption_rows(path: Path, label: str) -> list[tuple[str, str]]:
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read captions file {label} ({error}); fix or remove it") from None
    rows: list[tuple[str, str]] = []
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(f"{label} line {number} is not valid JSON; fix or remove it") from None
            if not isinstance(record, dict) or "file_name" not in record:
                raise InputError(f"{label} line {number} has no \"file_name\"; fix or remove it")
            if isinstance(record.get("text"), str):
                rows.append((str(record["file_name"]), record["text"]))
        return rows
    reader = csv.DictReader(content.splitlines())
    if not reader.fieldnames or "file_name" not in reader.fieldnames:
        raise InputError(f"{label} has no file_name column; fix or remove it")
    if "text" not in reader.fieldnames:
        return rows  # metadata without captions: nothing to use
    for record in reader:
        if record.get("file_name") and record.get("text") is not None:
            rows.append((record["file_name"], record["text"]))
    return rows
