"""Atomic file writes: readers see the old file or the new one, never half of either.

Everything hubtools writes for the user (configs, manifests, grids, curves, results) goes through here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; if the block succeeds it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # Not mkstemp: its files are 0600, and what the user gets should have the usual (umask) permissions.
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def save_image_atomic(image: Any, path: str | os.PathLike, **save_options: Any) -> Path:
    """Save a PIL image as PNG (or ``save_options``' format) atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=save_options.pop("format", "PNG"), **save_options)
    return Path(path)


def replace_dir(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the folder ``staged`` visible as ``final`` by rename; an existing ``final`` is moved aside first
    and deleted after, so a reader sees the old folder or the new one, never a half-deleted one."""
    staged, final = Path(staged), Path(final)
    if not final.exists():
        os.replace(staged, final)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, aside / final.name)
    os.replace(staged, final)
    shutil.rmtree(aside, ignore_errors=True)
