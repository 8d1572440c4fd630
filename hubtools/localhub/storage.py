"""Repos, commits and refs of the local hub: content-addressed blobs on disk plus one SQLite database.

A commit stores its whole tree (path -> file entry) as JSON. Blobs are written (temp file + os.replace)
before the commit row and the ref move happen in ONE SQLite transaction, so a crash mid-commit leaves
the repo at the old or at the new tree, never a mix, and every old commit stays readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hubtools.localhub.errors import (
    BadRequest,
    Conflict,
    EntryNotFound,
    PreconditionFailed,
    RepoNotFound,
    RevisionNotFound,
)
from hubtools.localhub.naming import REPO_TYPES

# The Hub's default .gitattributes: the initial commit of every new repo, and what decides LFS uploads.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
*.jpg filter=lfs diff=lfs merge=lfs -text
*.jpeg filter=lfs diff=lfs merge=lfs -text
*.webp filter=lfs diff=lfs merge=lfs -text
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, owner TEXT NOT NULL, private INTEGER NOT NULL,
    created_at TEXT NOT NULL, likes INTEGER NOT NULL DEFAULT 0, downloads INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo_type, repo_id)
);
CREATE TABLE IF NOT EXISTS commits (
    oid TEXT PRIMARY KEY, repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, parent TEXT,
    title TEXT NOT NULL, message TEXT NOT NULL, author TEXT NOT NULL, date TEXT NOT NULL, tree TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commits_by_repo ON commits (repo_type, repo_id);
CREATE TABLE IF NOT EXISTS refs (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    commit_oid TEXT NOT NULL, PRIMARY KEY (repo_type, repo_id, kind, name)
);
"""

DEFAULT_BRANCH = "main"
REF_KINDS = {"refs/heads/": "branch", "refs/tags/": "tag", "refs/pr/": "pr"}


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class FileEntry:
    """One file of a tree. ``git_oid`` is the blob id (of the LFS pointer for LFS files), as git has it."""

    sha256: str
    size: int
    git_oid: str
    lfs: bool

    def to_json(self) -> list:
        return [self.sha256, self.size, self.git_oid, self.lfs]

    @classmethod
    def from_json(cls, value: list) -> FileEntry:
        return cls(value[0], int(value[1]), value[2], bool(value[3]))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, FileEntry]


@dataclass(frozen=True)
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    created_at: str
    likes: int
    downloads: int


@dataclass(frozen=True)
class Ref:
    kind: str  # "branch", "tag" or "pr"
    name: str
    commit_oid: str

    @property
    def full_name(self) -> str:
        prefix = {"branch": "refs/heads/", "tag": "refs/tags/", "pr": "refs/pr/"}[self.kind]
        return prefix + self.name


# Operations of one commit, already validated: path -> new entry, or deletions.
@dataclass(frozen=True)
class AddFile:
    path: str
    entry: FileEntry


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


class Storage:
    """All state of one data folder. Thread-safe: writes are serialized, reads use their own connection."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.blobs_dir = self.data_dir / "blobs"
        self.tmp_dir = self.data_dir / "tmp"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "hub.sqlite"
        self._write_lock = threading.Lock()
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    # ---- low level -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")

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

    # ---- repos ---------------------------------------------------------------------------------

    def get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        row = self._connect().execute(
            "SELECT repo_type, repo_id, owner, private, created_at, likes, downloads FROM repos "
            "WHERE repo_type = ? AND repo_id = ?",
            (repo_type, repo_id),
        ).fetchone()
        return Repo(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6]) if row else None

    def require_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.get_repo(repo_type, repo_id)
        if repo is None:
            raise RepoNotFound(f"Repository {repo_id} ({repo_type}) not found.")
        return repo

    def list_repos(self, repo_type: str) -> list[Repo]:
        rows = self._connect().execute(
            "SELECT repo_type, repo_id, owner, private, created_at, likes, downloads FROM repos WHERE repo_type = ?",
            (repo_type,),
        ).fetchall()
        return [Repo(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows]

    def create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool) -> Repo:
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        sha256 = self.put_bytes(gitattributes)
        entry = FileEntry(sha256, len(gitattributes), git_blob_oid(gitattributes), False)
        now = _now_iso()
        with self._transaction() as db:
            if db.execute(
                "SELECT 1 FROM repos WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id)
            ).fetchone():
                raise Conflict(f"You already created this {repo_type} repo: {repo_id}.")
            db.execute(
                "INSERT INTO repos (repo_type, repo_id, owner, private, created_at) VALUES (?, ?, ?, ?, ?)",
                (repo_type, repo_id, owner, int(private), now),
            )
            oid = self._insert_commit(
                db, repo_type, repo_id, None, "initial commit", "", owner, {".gitattributes": entry}, now
            )
            db.execute(
                "INSERT INTO refs VALUES (?, ?, 'branch', ?, ?)", (repo_type, repo_id, DEFAULT_BRANCH, oid)
            )
        return self.require_repo(repo_type, repo_id)

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        # Blobs are shared between repos (content-addressed) and are left in place.
        with self._transaction() as db:
            for table in ("repos", "commits", "refs"):
                db.execute(f"DELETE FROM {table} WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id))

    def set_private(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE repos SET private = ? WHERE repo_type = ? AND repo_id = ?", (int(private), repo_type, repo_id)
            )

    def set_counter(self, repo_type: str, repo_id: str, column: str, value: int) -> None:
        if column not in ("likes", "downloads"):
            raise ValueError(column)
        if repo_type not in REPO_TYPES:
            raise BadRequest(f"Unknown repo type {repo_type!r}.")
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE repos SET {column} = ? WHERE repo_type = ? AND repo_id = ?", (int(value), repo_type, repo_id)
            )
            if cursor.rowcount == 0:
                raise RepoNotFound(f"Repository {repo_id} ({repo_type}) not found.")

    # ---- commits and refs ----------------------------------------------------------------------

    @staticmethod
    def _insert_commit(
        db: sqlite3.Connection,
        repo_type: str,
        repo_id: str,
        parent: str | None,
        title: str,
        message: str,
        author: str,
        tree: dict[str, FileEntry],
        date: str,
    ) -> str:
        tree_json = json.dumps({path: entry.to_json() for path, entry in sorted(tree.items())})
        # A fresh nonce keeps ids unique even for identical trees and messages.
        seed = json.dumps([repo_type, repo_id, parent, title, message, date, tree_json, secrets.token_hex(8)])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        db.execute(
            "INSERT INTO commits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (oid, repo_type, repo_id, parent, title, message, author, date, tree_json),
        )
        return oid

    def get_commit(self, repo_type: str, repo_id: str, oid: str) -> Commit | None:
        row = self._connect().execute(
            "SELECT oid, parent, title, message, author, date, tree FROM commits "
            "WHERE oid = ? AND repo_type = ? AND repo_id = ?",
            (oid, repo_type, repo_id),
        ).fetchone()
        if row is None:
            return None
        tree = {path: FileEntry.from_json(value) for path, value in json.loads(row[6]).items()}
        return Commit(row[0], row[1], row[2], row[3], row[4], row[5], tree)

    def list_refs(self, repo_type: str, repo_id: str) -> list[Ref]:
        rows = self._connect().execute(
            "SELECT kind, name, commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? ORDER BY kind, name",
            (repo_type, repo_id),
        ).fetchall()
        return [Ref(*row) for row in rows]

    def get_ref(self, repo_type: str, repo_id: str, kind: str, name: str) -> Ref | None:
        row = self._connect().execute(
            "SELECT kind, name, commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = ? AND name = ?",
            (repo_type, repo_id, kind, name),
        ).fetchone()
        return Ref(*row) if row else None

    @staticmethod
    def split_revision(revision: str) -> tuple[str | None, str]:
        """``refs/heads/x`` -> ("branch", "x"); a plain name -> (None, name)."""
        for prefix, kind in REF_KINDS.items():
            if revision.startswith(prefix):
                return kind, revision[len(prefix) :]
        return None, revision

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> tuple[Commit, Ref | None]:
        """A revision (branch, tag, refs/..., or full commit id) -> its commit and the ref it named, if any."""
        kind, name = self.split_revision(revision)
        kinds = [kind] if kind else ["branch", "tag"]
        for candidate in kinds:
            ref = self.get_ref(repo_type, repo_id, candidate, name)
            if ref is not None:
                commit = self.get_commit(repo_type, repo_id, ref.commit_oid)
                if commit is not None:
                    return commit, ref
        if kind is None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
            commit = self.get_commit(repo_type, repo_id, revision)
            if commit is not None:
                return commit, None
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    def history(self, repo_type: str, repo_id: str, start: Commit) -> list[Commit]:
        commits = [start]
        while commits[-1].parent is not None:
            parent = self.get_commit(repo_type, repo_id, commits[-1].parent)
            if parent is None:
                break
            commits.append(parent)
        return commits

    def commit(
        self,
        repo_type: str,
        repo_id: str,
        branch: str,
        operations: list[AddFile | DeleteFile | DeleteFolder],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        create_branch_from: str | None = None,
        branch_kind: str = "branch",
    ) -> str:
        """Apply ``operations`` on top of ``branch`` and move it, atomically. Returns the new commit id.

        Every blob the operations refer to must already be in the store. ``create_branch_from`` (a commit
        id) creates the ref when it does not exist yet (used for pull requests).
        """
        for op in operations:
            if isinstance(op, AddFile) and not self.has_blob(op.entry.sha256, op.entry.size):
                raise BadRequest(f"Blob {op.entry.sha256} for {op.path} was never uploaded (or its size differs).")
        with self._transaction() as db:
            row = db.execute(
                "SELECT commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = ? AND name = ?",
                (repo_type, repo_id, branch_kind, branch),
            ).fetchone()
            if row is None:
                if create_branch_from is None:
                    raise RevisionNotFound(f"Invalid rev id: {branch} is not a branch of {repo_id}.")
                head_oid = create_branch_from
            else:
                head_oid = row[0]
            if parent_commit is not None and parent_commit != head_oid:
                raise PreconditionFailed(
                    f"A commit has happened since {parent_commit}: {branch} is now at {head_oid}. Fetch and retry."
                )
            head = self.get_commit(repo_type, repo_id, head_oid)
            if head is None:  # pragma: no cover - refs always point at stored commits
                raise RevisionNotFound(f"Invalid rev id: {branch}")
            tree = dict(head.tree)
            for op in operations:
                if isinstance(op, AddFile):
                    _check_no_file_dir_clash(tree, op.path)
                    tree[op.path] = op.entry
                elif isinstance(op, DeleteFile):
                    if op.path not in tree:
                        raise EntryNotFound(f"File to delete not found: {op.path}")
                    del tree[op.path]
                else:
                    prefix = op.path.rstrip("/") + "/"
                    doomed = [path for path in tree if path.startswith(prefix)]
                    if not doomed:
                        raise EntryNotFound(f"Folder to delete not found: {op.path}")
                    for path in doomed:
                        del tree[path]
            oid = self._insert_commit(
                db, repo_type, repo_id, head_oid, title, message, author, tree, _now_iso()
            )
            db.execute(
                "INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?, ?)", (repo_type, repo_id, branch_kind, branch, oid)
            )
        return oid

    def create_ref(self, repo_type: str, repo_id: str, kind: str, name: str, commit_oid: str) -> None:
        with self._transaction() as db:
            if db.execute(
                "SELECT 1 FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = ? AND name = ?",
                (repo_type, repo_id, kind, name),
            ).fetchone():
                raise Conflict(f"Reference already exists: {name}")
            db.execute("INSERT INTO refs VALUES (?, ?, ?, ?, ?)", (repo_type, repo_id, kind, name, commit_oid))

    def delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str) -> None:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = ? AND name = ?",
                (repo_type, repo_id, kind, name),
            )
            if cursor.rowcount == 0:
                raise RevisionNotFound(f"Invalid rev id: {name}")

    def next_pr_number(self, repo_type: str, repo_id: str) -> int:
        numbers = [int(ref.name) for ref in self.list_refs(repo_type, repo_id) if ref.kind == "pr"]
        return max(numbers, default=0) + 1


def _check_no_file_dir_clash(tree: dict[str, FileEntry], path: str) -> None:
    parts = path.split("/")
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in tree:
            raise Conflict(f"Cannot add {path}: {'/'.join(parts[:depth])} is a file.")
    prefix = path + "/"
    if any(existing.startswith(prefix) for existing in tree):
        raise Conflict(f"Cannot add {path}: it is a folder.")


def sweep_stale_temp_files(storage: Storage, older_than_s: float = 3600.0) -> None:
    """Uploads interrupted by a crash leave temp files behind; they are never part of a commit."""
    cutoff = time.time() - older_than_s
    for path in storage.tmp_dir.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass
