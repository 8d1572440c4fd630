"""The dataset viewer: the first rows of a dataset, from its parquet files (what ``datasets.push_to_hub``
writes; image cells become JPEG thumbnails as ``data:`` URLs) or an imagefolder's ``metadata.jsonl``
(thumbnails from ``resolve/``)."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubtools.localhub.pages.formatting import file_url
from hubtools.localhub.pages.summaries import read_text_file
from hubtools.localhub.storage import Commit, Repo, Storage

VIEWER_ROWS = 12
THUMBNAIL_PX = 160
MAX_THUMBNAIL_SOURCE_PIXELS = 40_000_000
MAX_ROW_GROUP_BYTES = 256 * 1024 * 1024

@dataclass
class Cell:
    text: str = ""
    image: str | None = None  # a URL (resolve/) or a data: URL of a thumbnail


@dataclass
class RowsView:
    source: str  # the file the rows come from
    columns: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    total: int | None = None


_rows_cache: OrderedDict[str, RowsView] = OrderedDict()
_rows_lock = threading.Lock()


def dataset_rows(storage: Storage, repo: Repo, commit: Commit, revision: str) -> RowsView | None:
    """The first rows of the dataset: from its parquet files (what ``datasets.push_to_hub`` writes) or an
    imagefolder's ``metadata.jsonl``; None when there is neither."""
    files = sorted(path for path, _ in commit.tree.items())
    parquet = [f for f in files if f.endswith(".parquet")]
    if parquet:
        entry = commit.tree[parquet[0]]
        with _rows_lock:
            cached = _rows_cache.get(entry.sha256)
        if cached is None:
            cached = _parquet_rows(storage.blobs.verified_path(entry.sha256), parquet[0])
            with _rows_lock:
                _rows_cache[entry.sha256] = cached
                while len(_rows_cache) > 64:
                    _rows_cache.popitem(last=False)
        return cached
    metadata = next((f for f in files if f == "metadata.jsonl" or f.endswith("/metadata.jsonl")), None)
    if metadata is not None:
        return _imagefolder_rows(storage, repo, commit, revision, metadata)
    return None


def _parquet_rows(path: Path, name: str) -> RowsView:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    view = RowsView(name, list(parquet.schema_arrow.names), total=parquet.metadata.num_rows)
    metadata = parquet.metadata
    if metadata.num_row_groups == 0 or metadata.row_group(0).total_byte_size > MAX_ROW_GROUP_BYTES:
        return view  # reading a few rows would mean decoding a huge row group: show the columns only
    batch = next(parquet.iter_batches(batch_size=VIEWER_ROWS), None)
    if batch is None:
        return view
    for record in batch.to_pylist():
        view.rows.append([_cell(record.get(column)) for column in view.columns])
    return view


def _cell(value: Any) -> Cell:
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)):
        return Cell(text=str(value.get("path") or ""), image=thumbnail_data_url(bytes(value["bytes"])))
    text = "" if value is None else str(value)
    return Cell(text=text if len(text) <= 300 else text[:300] + "…")


def thumbnail_data_url(data: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_THUMBNAIL_SOURCE_PIXELS:
                return None  # not worth decoding for a thumbnail (and a decompression bomb never is)
            image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG decodes at a reduced scale
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _imagefolder_rows(storage: Storage, repo: Repo, commit: Commit, revision: str, metadata: str) -> RowsView:
    text = read_text_file(storage, commit, metadata, limit=4 * 1024 * 1024) or ""
    folder = metadata.rsplit("/", 1)[0] + "/" if "/" in metadata else ""
    lines = [line for line in text.splitlines() if line.strip()]
    view = RowsView(metadata, total=len(lines))
    records = []
    for line in lines[:VIEWER_ROWS]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    view.columns = list(dict.fromkeys(key for record in records for key in record))
    for record in records:
        row = []
        for column in view.columns:
            value = record.get(column)
            if column == "file_name" and isinstance(value, str) and (folder + value) in commit.tree:
                row.append(Cell(text=value, image=file_url(repo, "resolve", revision, folder + value)))
            else:
                row.append(_cell(value))
        view.rows.append(row)
    return view
