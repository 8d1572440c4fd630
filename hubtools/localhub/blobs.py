"""The blob store of the local hub: file contents on disk, addressed by their sha256.

Blobs are written (temp file in ``tmp/`` + ``os.replace``) before any commit names them, so a crash
never leaves a commit without its blob.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from hubtools.localhub.schema import Database


class BlobStore:
    """``blobs/`` (content by sha256) and ``tmp/`` (uploads in flight) of one data folder."""

    def __init__(self, data_dir: Path, db: Database) -> None:
        self.db = db
        self.blobs_dir = Path(data_dir) / "blobs"
        self.tmp_dir = Path(data_dir) / "tmp"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256[2:]

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def new_temp_file(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        return fd, Path(name)

    def adopt_blob(self, temp_path: Path, sha256: str) -> None:
        """Move a verified temp file into the blob store (atomic; idempotent for identical content)."""
        target = self.blob_path(sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(temp_path, target)

    def put_bytes(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        if not self.has_blob(sha256, len(content)):
            fd, temp_path = self.new_temp_file()
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            self.adopt_blob(temp_path, sha256)
        return sha256

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def sweep_stale_temp_files(self, older_than_s: float = 3600.0) -> None:
        """Uploads interrupted by a crash leave temp files behind; they are never part of a commit."""
        cutoff = time.time() - older_than_s
        for path in self.tmp_dir.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass
