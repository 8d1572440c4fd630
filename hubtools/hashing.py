"""Streaming file digests: big weight files are hashed in 1 MiB blocks, never read whole."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path, digest) -> str:
    """``digest`` (a ``hashlib`` object, possibly already fed a header) updated with the file's bytes, as hex."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(Path(path), hashlib.sha256())
