"""The blob store of the local hub: file contents on disk, addressed by their sha256, and which repo owns
which blob.

Blobs are shared on disk (deduplication is an internal saving) but belong to repos: ``repo_blobs`` lists
the blobs each repo may name in a commit -- the ones uploaded to it (LFS, Xet, inline in a commit), the
ones its own history names, and the ones a duplicate or move brought. Knowing a sha256 is never enough to
reach another repo's file, and no answer tells whether a blob exists outside the asking repo.

Blobs are written (temp file in ``tmp/`` + ``os.replace``) before any commit names them, so a crash
never leaves a commit without its blob. Files are 0600 and folders 0700: only the hub's user reads them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from hubtools.localhub.errors import HubHTTPError
from hubtools.localhub.schema import Database

logger = logging.getLogger("hubtools.localhub")

_CHUNK = 1024 * 1024
_MAX_USES_LOGGED = 20
_DAMAGED = ("The blob {sha256} is damaged on this hub (it failed its sha256 check and was set aside): the file "
            "must be uploaded again; the hub's admin sees it in `hubtools hub fsck`.")


class BlobError(ValueError):
    """A file offered to the store does not hash to the sha256 it was given as."""


class BlobDamaged(HubHTTPError):
    """A blob failed its check on read (or was set aside after one): the file cannot be served whole."""

    status = 500


def private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BlobStore:
    """``blobs/`` (content by sha256), ``tmp/`` (uploads in flight) and the ``repo_blobs`` table."""

    def __init__(self, data_dir: Path, db: Database) -> None:
        self.db = db
        self.blobs_dir = Path(data_dir) / "blobs"
        self.tmp_dir = Path(data_dir) / "tmp"
        self.quarantine_dir = Path(data_dir) / "quarantine"
        # sha256 -> (size, mtime_ns, inode) of blobs hashed whole since they last changed on disk
        self._verified: dict[str, tuple[int, int, int]] = {}
        self._verified_lock = threading.Lock()
        private_dir(self.blobs_dir)
        private_dir(self.tmp_dir)
        if db.found_version < 3:  # blobs of older layouts were written world-readable
            for path in self.blobs_dir.rglob("*"):
                os.chmod(path, 0o700 if path.is_dir() else 0o600)

    # ---- the files -------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256[2:]

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Whether the store holds this blob, for any repo: internal only, never an answer to a client."""
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def new_temp_file(self) -> tuple[int, Path]:
        """An open (fd, path) in ``tmp/`` for an upload in flight (mode 0600)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        return fd, Path(name)

    def adopt_blob(self, temp_path: Path, sha256: str) -> None:
        """Move a verified temp file into the blob store (atomic; idempotent for identical content)."""
        target = self.blob_path(sha256)
        if not target.parent.is_dir():
            target.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(temp_path, 0o600)
        os.replace(temp_path, target)

    def put_bytes(self, content: bytes) -> str:
        """Store ``content`` (owned by no repo yet: see ``put_bytes_for_repo``); returns its sha256."""
        sha256 = hashlib.sha256(content).hexdigest()
        if not self.has_blob(sha256, len(content)):
            self.adopt_blob(self.durable_temp_file(content), sha256)
        return sha256

    def durable_temp_file(self, content: bytes) -> Path:
        """``content`` in a new temp file of ``tmp/`` (mode 0600), on disk before it is moved into place."""
        fd, temp_path = self.new_temp_file()
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        return temp_path

    def read_blob(self, sha256: str) -> bytes:
        """The whole blob, checked against its sha256 (BlobDamaged, and the blob set aside, when not)."""
        content = self._open(sha256).read()
        if hashlib.sha256(content).hexdigest() != sha256:
            self.quarantine(sha256)
        return content

    # ---- reads, every one verified ---------------------------------------------------------------

    def _open(self, sha256: str):  # noqa: ANN202 - a binary file
        try:
            return open(self.blob_path(sha256), "rb")
        except FileNotFoundError:
            if (self.quarantine_dir / sha256).exists():
                raise BlobDamaged(_DAMAGED.format(sha256=sha256)) from None
            raise BlobDamaged(f"The blob {sha256} is missing on this hub: the file must be uploaded again; "
                              "`hubtools hub fsck` lists what uses it.") from None

    def _signature(self, path: Path) -> tuple[int, int, int]:
        info = path.stat()
        return info.st_size, info.st_mtime_ns, info.st_ino

    def _mark_verified(self, sha256: str, signature: tuple[int, int, int]) -> None:
        with self._verified_lock:
            self._verified[sha256] = signature

    def ensure_verified(self, sha256: str) -> None:
        """Hash the whole blob unless it was hashed whole since it last changed on disk (a range read
        cannot check its bytes alone). BlobDamaged, and the blob set aside, on a mismatch."""
        path = self.blob_path(sha256)
        try:
            signature = self._signature(path)
        except FileNotFoundError:
            self._open(sha256)  # raises BlobDamaged
            raise
        with self._verified_lock:
            if self._verified.get(sha256) == signature:
                return
        if file_sha256(path) != sha256:
            self.quarantine(sha256)
        self._mark_verified(sha256, signature)

    def verified_path(self, sha256: str) -> Path:
        """The blob's path for a reader that opens it itself (pyarrow, PIL), after ``ensure_verified``."""
        self.ensure_verified(sha256)
        return self.blob_path(sha256)

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start``, of a blob checked whole first (``ensure_verified``)."""
        self.ensure_verified(sha256)
        with self._open(sha256) as handle:
            handle.seek(start)
            return handle.read(length)

    def stream_range(self, sha256: str, start: int, length: int) -> Iterator[bytes]:
        """Chunks of ``length`` bytes from ``start``, of a blob checked whole first."""
        self.ensure_verified(sha256)
        with self._open(sha256) as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def stream_whole(self, sha256: str, size: int) -> Iterator[bytes]:
        """The whole blob in chunks, hashed as it streams; the last chunk is held back until the hash is
        known, so on a mismatch the reader gets BlobDamaged (the server cuts the connection) before the
        last byte, and nothing damaged is ever received whole."""
        path = self.blob_path(sha256)
        digest = hashlib.sha256()
        with self._open(sha256) as handle:
            signature = self._signature(path)
            held = b""
            remaining = size
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                digest.update(chunk)
                if held:
                    yield held
                held = chunk
        if digest.hexdigest() != sha256:
            self.quarantine(sha256)
        self._mark_verified(sha256, signature)
        if held:
            yield held

    def uses_of(self, sha256: str, limit: int = _MAX_USES_LOGGED) -> list[tuple[str, str, str, str]]:
        """(repo_type, repo_id, commit oid, path) of the files that name this blob, newest commits first."""
        return self.db.connect().execute(
            "SELECT c.repo_type, c.repo_id, c.oid, f.path FROM files f JOIN commits c ON c.seq = f.commit_seq "
            "WHERE f.sha256 = ? AND f.deleted = 0 ORDER BY c.seq DESC LIMIT ?", (sha256, limit)).fetchall()

    def quarantine(self, sha256: str) -> None:
        """Set a blob that failed its check aside (``quarantine/``), log what uses it, raise BlobDamaged."""
        with self._verified_lock:
            self._verified.pop(sha256, None)
        private_dir(self.quarantine_dir)
        try:
            os.replace(self.blob_path(sha256), self.quarantine_dir / sha256)
        except FileNotFoundError:
            pass  # another reader set it aside first
        uses = self.uses_of(sha256)
        used_by = "; ".join(f"{repo_type} {repo_id}@{oid[:7]} {path}" for repo_type, repo_id, oid, path in uses)
        logger.error("local hub: blob %s failed its sha256 check on read and was moved to quarantine/; "
                     "used by: %s. Upload those files again; `hubtools hub fsck` lists every problem.",
                     sha256, used_by or "no commit")
        raise BlobDamaged(_DAMAGED.format(sha256=sha256))

    def sweep_stale_temp_files(self, older_than_s: float = 3600.0) -> None:
        """Uploads interrupted by a crash leave temp files behind; they are never part of a commit."""
        cutoff = time.time() - older_than_s
        for path in self.tmp_dir.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass

    # ---- which repo owns which blob --------------------------------------------------------------

    def add_blob_for_repo(self, repo_type: str, repo_id: str, temp_path: Path, sha256: str, *,
                          verified: bool = False) -> int:
        """THE entry point for a file uploaded to a repo (LFS, Xet): move ``temp_path`` (a file in ``tmp/``,
        from ``new_temp_file``) into the store as blob ``sha256``, owned by the repo. Unless the caller
        already hashed every byte as it arrived (``verified``), the file is hashed here; BlobError when it
        does not match (the temp file is removed). Returns the blob's size."""
        if not verified and file_sha256(temp_path) != sha256:
            temp_path.unlink(missing_ok=True)
            raise BlobError(f"The uploaded file does not hash to {sha256}.")
        size = temp_path.stat().st_size
        self.adopt_blob(temp_path, sha256)
        with self.db.transaction() as db:
            grant(db, repo_type, repo_id, [sha256])
        return size

    def put_bytes_for_repo(self, repo_type: str, repo_id: str, content: bytes) -> str:
        """Store ``content`` sent to a repo (a file inline in a commit), owned by that repo; its sha256."""
        sha256 = self.put_bytes(content)
        with self.db.transaction() as db:
            grant(db, repo_type, repo_id, [sha256])
        return sha256

    def owns(self, repo_type: str, repo_id: str, sha256: str, size: int | None = None) -> bool:
        """Whether the repo may name this blob in a commit, and the store holds it (with ``size``)."""
        row = self.db.connect().execute(
            "SELECT 1 FROM repo_blobs WHERE repo_type = ? AND repo_id = ? AND sha256 = ?",
            (repo_type, repo_id, sha256)).fetchone()
        return row is not None and self.has_blob(sha256, size)


def grant(db: sqlite3.Connection, repo_type: str, repo_id: str, sha256s: Iterable[str]) -> None:
    """Let a repo name these blobs (inside the caller's transaction): its own uploads, commits, duplicates."""
    db.executemany("INSERT OR IGNORE INTO repo_blobs (repo_type, repo_id, sha256) VALUES (?, ?, ?)",
                   [(repo_type, repo_id, sha256) for sha256 in set(sha256s)])
