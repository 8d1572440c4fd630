"""The one call Xet makes into the blob store: keep a verified file as a sha256 blob owned by a repo."""

from __future__ import annotations

from pathlib import Path

from hubtools.localhub.storage import Storage


def own_blob(storage: Storage, temp_path: Path, sha256: str, size: int, repo_type: str, repo_id: str) -> None:
    """Move a verified temp file (``sha256``, ``size`` bytes) into the blob store for ``repo_type/repo_id``."""
    if storage.has_blob(sha256, size):
        return
    storage.adopt_blob(temp_path, sha256)
