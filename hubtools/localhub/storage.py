"""Repos, commits and refs of the local hub: content-addressed blobs on disk plus one SQLite database.

Every commit's files are rows of the ``files`` table keyed by (commit ``seq``, path): either the whole
tree, or the commit's changes (added/changed files and deletion markers) over a ``base`` commit whose rows
are a whole tree (see ``CommitTree``). A path lookup, a folder listing or a short-sha lookup is one or two
indexed queries whatever the repo's size, and a commit writes the files it changes plus its parent's
change set (bounded by ``delta_limit``); only when that grows past the limit does a commit write the whole
tree again. ``benchmarks/README.md`` has the figures. Blobs referenced by a repo are the ``sha256`` of its
``files`` rows with ``deleted = 0``.

Blobs are written (temp file + os.replace) before the commit row, its file rows and the ref move happen
in ONE SQLite transaction, so a crash mid-commit leaves the repo at the old or at the new tree, never a
mix, and every old commit stays readable.

A data folder of the first layout (each commit's tree as one JSON column) is migrated in place, in one
transaction, the first time it is opened.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
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

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, owner TEXT NOT NULL, private INTEGER NOT NULL,
    created_at TEXT NOT NULL, likes INTEGER NOT NULL DEFAULT 0, downloads INTEGER NOT NULL DEFAULT 0,
    gated TEXT, sdk TEXT,
    PRIMARY KEY (repo_type, repo_id)
);
CREATE TABLE IF NOT EXISTS commits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, oid TEXT NOT NULL UNIQUE, repo_type TEXT NOT NULL,
    repo_id TEXT NOT NULL, parent TEXT, title TEXT NOT NULL, message TEXT NOT NULL, author TEXT NOT NULL,
    date TEXT NOT NULL, base_seq INTEGER, n_files INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS commits_by_repo ON commits (repo_type, repo_id);
CREATE TABLE IF NOT EXISTS files (
    commit_seq INTEGER NOT NULL, path TEXT NOT NULL, dir TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, git_oid TEXT NOT NULL, lfs INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (commit_seq, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_dir ON files (commit_seq, dir);
CREATE TABLE IF NOT EXISTS refs (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    commit_oid TEXT NOT NULL, PRIMARY KEY (repo_type, repo_id, kind, name)
);
CREATE TABLE IF NOT EXISTS likes (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, user TEXT NOT NULL, liked_at TEXT NOT NULL,
    PRIMARY KEY (repo_type, repo_id, user)
);
CREATE TABLE IF NOT EXISTS redirects (
    repo_type TEXT NOT NULL, old_id TEXT NOT NULL, new_id TEXT NOT NULL, PRIMARY KEY (repo_type, old_id)
);
CREATE TABLE IF NOT EXISTS discussions (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, num INTEGER NOT NULL, is_pr INTEGER NOT NULL,
    title TEXT NOT NULL, author TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (repo_type, repo_id, num)
);
CREATE TABLE IF NOT EXISTS discussion_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo_type TEXT NOT NULL, repo_id TEXT NOT NULL,
    num INTEGER NOT NULL, type TEXT NOT NULL, author TEXT NOT NULL, created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_discussion ON discussion_events (repo_type, repo_id, num);
"""

class StorageError(Exception):
    """A data folder this hubtools cannot serve (one line saying what to do)."""


DEFAULT_BRANCH = "main"
REF_KINDS = {"refs/heads/": "branch", "refs/tags/": "tag", "refs/pr/": "pr"}
SHORT_SHA_MIN = 7
_HEX = frozenset("0123456789abcdef")


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parent_dir(path: str) -> str:
    """``a/b/c.txt`` -> ``a/b``; a file at the root -> ``""``."""
    return path.rpartition("/")[0]


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix`` (for range scans)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


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

    @classmethod
    def from_row(cls, row: tuple) -> FileEntry:
        return cls(row[0], int(row[1]), row[2], bool(row[3]))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


class CommitTree(Mapping[str, FileEntry]):
    """The files of one commit (path -> entry), read from the ``files`` table on demand.

    A commit's rows are either its whole tree (``base`` is None) or its changes over ``base``, a commit
    whose rows are a whole tree: added or changed files, and deletion markers. Every read is at most two
    indexed queries, whatever the repo's size. ``tree.get(path)`` and ``path in tree`` are one or two
    lookups; iterating, ``items()`` and ``under(folder)`` are one query. Rows of a commit never change
    once it is written, so nothing here goes stale.
    """

    _COLUMNS = "sha256, size, git_oid, lfs"

    def __init__(self, storage: Storage, seq: int, base: int | None = None, count: int | None = None) -> None:
        self._storage = storage
        self._seq = seq
        self._base = base
        self._count = count

    def _db(self) -> sqlite3.Connection:
        return self._storage._connect()

    def _effective(self, columns: str, where: str, params: dict, order: str = "") -> list[tuple]:
        """Rows of the tree matching ``where`` (on the files table's columns), changes over the base."""
        params = {**params, "seq": self._seq, "base": self._base}
        own = f"SELECT {columns} FROM files WHERE commit_seq = :seq AND deleted = 0 AND {where}"
        if self._base is None:
            query = own
        else:
            query = (f"{own} UNION ALL SELECT {columns} FROM files AS b WHERE b.commit_seq = :base AND {where} "
                     "AND NOT EXISTS (SELECT 1 FROM files AS d WHERE d.commit_seq = :seq AND d.path = b.path)")
        return self._db().execute(query + order, params).fetchall()

    def get(self, path: str, default: FileEntry | None = None) -> FileEntry | None:  # type: ignore[override]
        db = self._db()
        row = db.execute(f"SELECT {self._COLUMNS}, deleted FROM files WHERE commit_seq = ? AND path = ?",
                         (self._seq, path)).fetchone()
        if row is None and self._base is not None:
            row = db.execute(f"SELECT {self._COLUMNS}, 0 FROM files WHERE commit_seq = ? AND path = ?",
                             (self._base, path)).fetchone()
        if row is None or row[4]:
            return default
        return FileEntry.from_row(row)

    def __getitem__(self, path: str) -> FileEntry:
        entry = self.get(path)
        if entry is None:
            raise KeyError(path)
        return entry

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.get(path) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([row[0] for row in self._effective("path", "1", {}, " ORDER BY path")])

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(row[0] for row in self._effective("COUNT(*)", "1", {}))
        return self._count

    def items(self) -> list[tuple[str, FileEntry]]:  # type: ignore[override]  # one query, not one per path
        return self.under("")

    def values(self) -> list[FileEntry]:  # type: ignore[override]
        return [entry for _, entry in self.under("")]

    def under(self, folder: str, *, recursive: bool = True) -> list[tuple[str, FileEntry]]:
        """(path, entry) of the files under ``folder`` ("" is the root), sorted by path; only the folder's
        direct children when ``recursive`` is false."""
        folder = folder.strip("/")
        if not recursive:
            where, params = "dir = :dir", {"dir": folder}
        elif not folder:
            where, params = "1", {}
        else:
            prefix = folder + "/"
            where, params = "path >= :lo AND path < :hi", {"lo": prefix, "hi": prefix_upper_bound(prefix)}
        rows = self._effective(f"path, {self._COLUMNS}", where, params, " ORDER BY path")
        return [(row[0], FileEntry.from_row(row[1:])) for row in rows]

    def folders(self, folder: str = "", *, recursive: bool = True) -> list[str]:
        """The folders under ``folder`` ("" is the root), sorted; only direct subfolders unless recursive."""
        folder = folder.strip("/")
        if folder:
            prefix = folder + "/"
            where, params = "dir >= :lo AND dir < :hi", {"lo": prefix, "hi": prefix_upper_bound(prefix)}
        else:
            prefix = ""
            where, params = "dir != ''", {}
        dirs = {row[0] for row in self._effective("DISTINCT dir", where, params)}
        found: set[str] = set()
        for directory in dirs:
            parts = directory[len(prefix):].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                found.add(prefix + "/".join(parts[:depth]))
        return sorted(found)

    def is_folder(self, folder: str) -> bool:
        prefix = folder.strip("/") + "/"
        where = "path >= :lo AND path < :hi"
        return any(self._effective("1", where + " LIMIT 1" if self._base is None else where,
                                   {"lo": prefix, "hi": prefix_upper_bound(prefix)}))

    def total_size(self) -> int:
        return sum(row[0] or 0 for row in self._effective("SUM(size)", "1", {}))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CommitTree):
            return self._seq == other._seq or self.items() == other.items()
        return Mapping.__eq__(self, other)

    def __hash__(self) -> int:
        return hash(self._seq)

    def __repr__(self) -> str:
        return f"CommitTree(seq={self._seq}, base={self._base})"


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: CommitTree


@dataclass(frozen=True)
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    created_at: str
    likes: int
    downloads: int
    gated: str | None = None  # None (not gated), "auto" or "manual", as the Hub reports it
    sdk: str | None = None  # spaces only: "gradio", "docker", "static", ...

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


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


_REPO_COLUMNS = "repo_type, repo_id, owner, private, created_at, likes, downloads, gated, sdk"
_COMMIT_COLUMNS = "seq, oid, parent, title, message, author, date, base_seq, n_files"


def _repo_from_row(row: tuple) -> Repo:
    return Repo(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6], row[7], row[8])


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
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(f"{self.data_dir} was written by a newer hubtools (data layout {version}, this "
                                   f"one reads up to {SCHEMA_VERSION}): upgrade hubtools to serve it.")
            _migrate_v1(db)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
            f"SELECT {_REPO_COLUMNS} FROM repos WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id)
        ).fetchone()
        return _repo_from_row(row) if row else None

    def require_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.get_repo(repo_type, repo_id)
        if repo is None:
            raise RepoNotFound(f"Repository {repo_id} ({repo_type}) not found.")
        return repo

    def list_repos(self, repo_type: str | None = None) -> list[Repo]:
        """Every repo of ``repo_type`` (of every type when None), sorted by type and id."""
        if repo_type is None:
            rows = self._connect().execute(f"SELECT {_REPO_COLUMNS} FROM repos ORDER BY repo_type, repo_id")
        else:
            rows = self._connect().execute(
                f"SELECT {_REPO_COLUMNS} FROM repos WHERE repo_type = ? ORDER BY repo_id", (repo_type,))
        return [_repo_from_row(row) for row in rows.fetchall()]

    def redirect_of(self, repo_type: str, repo_id: str) -> str | None:
        """Where a moved repo went (the Hub keeps the old name working), or None."""
        row = self._connect().execute(
            "SELECT new_id FROM redirects WHERE repo_type = ? AND old_id = ?", (repo_type, repo_id)
        ).fetchone()
        return row[0] if row else None

    def create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool, *,
                    sdk: str | None = None) -> Repo:
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
                "INSERT INTO repos (repo_type, repo_id, owner, private, created_at, sdk) VALUES (?, ?, ?, ?, ?, ?)",
                (repo_type, repo_id, owner, int(private), now, sdk),
            )
            # A new repo takes the name over from a repo that was moved away from it.
            db.execute("DELETE FROM redirects WHERE repo_type = ? AND old_id = ?", (repo_type, repo_id))
            oid = self._insert_commit(db, repo_type, repo_id, None, "initial commit", "", owner, None, now)
            seq = _seq_of(db, oid)
            _insert_file(db, seq, ".gitattributes", entry)
            db.execute("UPDATE commits SET n_files = 1 WHERE seq = ?", (seq,))
            db.execute(
                "INSERT INTO refs VALUES (?, ?, 'branch', ?, ?)", (repo_type, repo_id, DEFAULT_BRANCH, oid)
            )
        return self.require_repo(repo_type, repo_id)

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        # Blobs are shared between repos (content-addressed) and are left in place.
        with self._transaction() as db:
            _delete_repo_rows(db, repo_type, repo_id)
            db.execute("DELETE FROM redirects WHERE repo_type = ? AND new_id = ?", (repo_type, repo_id))

    def set_private(self, repo_type: str, repo_id: str, private: bool) -> None:
        self.update_repo(repo_type, repo_id, private=private)

    def update_repo(self, repo_type: str, repo_id: str, **changes: object) -> None:
        """Set ``private``, ``gated`` (None, "auto" or "manual") and/or ``sdk`` of a repo."""
        allowed = {"private", "gated", "sdk"}
        if not changes or not set(changes) <= allowed:
            raise ValueError(f"update_repo takes {sorted(allowed)}, got {sorted(changes)}")
        values = {key: (int(value) if key == "private" else value) for key, value in changes.items()}
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._transaction() as db:
            cursor = db.execute(f"UPDATE repos SET {assignments} WHERE repo_type = ? AND repo_id = ?",
                                (*values.values(), repo_type, repo_id))
            if cursor.rowcount == 0:
                raise RepoNotFound(f"Repository {repo_id} ({repo_type}) not found.")

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
        changes: object,
        date: str,
    ) -> str:
        """Insert the commit row (its files are written by the caller) and return the new commit id."""
        # A fresh nonce keeps ids unique even for identical changes and messages.
        seed = json.dumps([repo_type, repo_id, parent, title, message, date, repr(changes), secrets.token_hex(8)])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        db.execute(
            "INSERT INTO commits (oid, repo_type, repo_id, parent, title, message, author, date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (oid, repo_type, repo_id, parent, title, message, author, date),
        )
        return oid

    def _commit_from_row(self, row: tuple) -> Commit:
        return Commit(row[1], row[2], row[3], row[4], row[5], row[6], CommitTree(self, row[0], row[7], row[8]))

    def get_commit(self, repo_type: str, repo_id: str, oid: str) -> Commit | None:
        row = self._connect().execute(
            f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE oid = ? AND repo_type = ? AND repo_id = ?",
            (oid, repo_type, repo_id),
        ).fetchone()
        return self._commit_from_row(row) if row else None

    def find_commits(self, repo_type: str, repo_id: str, oid_prefix: str) -> list[str]:
        """Full ids of the repo's commits whose id starts with ``oid_prefix`` (at most two: enough to tell
        a unique short sha from an ambiguous one)."""
        oid_prefix = oid_prefix.lower()
        if not oid_prefix or not set(oid_prefix) <= _HEX:
            return []
        rows = self._connect().execute(
            "SELECT oid FROM commits WHERE oid >= ? AND oid < ? AND repo_type = ? AND repo_id = ? LIMIT 2",
            (oid_prefix, prefix_upper_bound(oid_prefix), repo_type, repo_id),
        ).fetchall()
        return [row[0] for row in rows]

    def expand_commit_id(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """A full or short (7+ hex characters) commit id of this repo -> the full id, or None."""
        if not SHORT_SHA_MIN <= len(revision) <= 40 or not set(revision.lower()) <= _HEX:
            return None
        found = self.find_commits(repo_type, repo_id, revision)
        if len(found) > 1:
            raise BadRequest(f"Ambiguous short commit id {revision}: give more characters.")
        return found[0] if found else None

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
        """A revision (branch, tag, refs/..., full or 7+ character commit id) -> its commit and the ref
        it named, if any."""
        kind, name = self.split_revision(revision)
        kinds = [kind] if kind else ["branch", "tag"]
        for candidate in kinds:
            ref = self.get_ref(repo_type, repo_id, candidate, name)
            if ref is not None:
                commit = self.get_commit(repo_type, repo_id, ref.commit_oid)
                if commit is not None:
                    return commit, ref
        if kind is None:
            oid = self.expand_commit_id(repo_type, repo_id, revision)
            commit = self.get_commit(repo_type, repo_id, oid) if oid else None
            if commit is not None:
                return commit, None
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    def history(self, repo_type: str, repo_id: str, start: Commit, limit: int | None = None) -> list[Commit]:
        """``start`` and its ancestors, newest first (at most ``limit`` of them)."""
        commits = [start]
        while commits[-1].parent is not None and (limit is None or len(commits) < limit):
            parent = self.get_commit(repo_type, repo_id, commits[-1].parent)
            if parent is None:
                break
            commits.append(parent)
        return commits

    def list_files(self, repo_type: str, repo_id: str, revision: str, folder: str = "", *,
                   recursive: bool = True) -> list[tuple[str, FileEntry]]:
        """(path, entry) of the files under ``folder`` at ``revision``, sorted by path."""
        commit, _ = self.resolve(repo_type, repo_id, revision)
        return commit.tree.under(folder, recursive=recursive)

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
        id) creates the ref when it does not exist yet (used for pull requests). ``parent_commit`` may be
        a short (7+ character) id, as the Hub takes it.
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
            if parent_commit is not None and not (
                len(parent_commit) >= SHORT_SHA_MIN and head_oid.startswith(parent_commit.lower())
            ):
                raise PreconditionFailed(
                    f"A commit has happened since {parent_commit}: {branch} is now at {head_oid}. Fetch and retry."
                )
            head = db.execute("SELECT seq, base_seq, n_files FROM commits WHERE oid = ?", (head_oid,)).fetchone()
            if head is None:  # pragma: no cover - refs always point at stored commits
                raise RevisionNotFound(f"Invalid rev id: {head_oid}")
            oid = self._insert_commit(
                db, repo_type, repo_id, head_oid, title, message, author, operations, _now_iso()
            )
            seq = _seq_of(db, oid)
            base = _start_tree(db, self, seq, *head)
            tree = CommitTree(self, seq, base)
            count = _apply_operations(db, tree, head[2], operations)
            db.execute("UPDATE commits SET base_seq = ?, n_files = ? WHERE seq = ?", (base, count, seq))
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
        """The next discussion / pull-request number (they share one sequence, as on the Hub)."""
        db = self._connect()
        refs = [int(row[0]) for row in db.execute(
            "SELECT name FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = 'pr'", (repo_type, repo_id))
            if row[0].isdigit()]
        discussions = db.execute(
            "SELECT COALESCE(MAX(num), 0) FROM discussions WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id)
        ).fetchone()[0]
        return max([discussions, *refs]) + 1


def _seq_of(db: sqlite3.Connection, oid: str) -> int:
    row = db.execute("SELECT seq FROM commits WHERE oid = ?", (oid,)).fetchone()
    if row is None:  # pragma: no cover - refs always point at stored commits
        raise RevisionNotFound(f"Invalid rev id: {oid}")
    return row[0]


def _insert_file(db: sqlite3.Connection, seq: int, path: str, entry: FileEntry) -> None:
    db.execute(
        "INSERT OR REPLACE INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        (seq, path, parent_dir(path), entry.sha256, entry.size, entry.git_oid, int(entry.lfs)),
    )


def delta_limit(n_files: int) -> int:
    """How many change rows a commit may carry over its base before the next commit writes a whole tree:
    enough that a run of small commits copies few rows, few enough that reads stay two lookups."""
    return max(256, 4 * math.isqrt(n_files))


def _start_tree(db: sqlite3.Connection, storage: Storage, seq: int, head_seq: int, head_base: int | None,
                head_count: int) -> int | None:
    """Give the new commit ``seq`` the rows of its parent's tree; returns the new commit's base.

    On a whole tree, the new commit starts as an empty change set over it. On a change set, it copies
    those changes (small: at most ``delta_limit`` rows), or, once they outgrow the limit, writes the
    whole tree again -- so a commit costs the files it changes plus, now and then, one copy of the tree.
    """
    if head_base is None:
        return head_seq
    changes = db.execute("SELECT COUNT(*) FROM files WHERE commit_seq = ?", (head_seq,)).fetchone()[0]
    if changes < delta_limit(head_count):
        db.execute("INSERT INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
                   "SELECT ?, path, dir, sha256, size, git_oid, lfs, deleted FROM files WHERE commit_seq = ?",
                   (seq, head_seq))
        return head_base
    head_tree = CommitTree(storage, head_seq, head_base)
    rows = head_tree._effective("path, dir, sha256, size, git_oid, lfs", "1", {})
    db.executemany("INSERT INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, 0)", [(seq, *row) for row in rows])
    return None


def _delete_path(db: sqlite3.Connection, tree: CommitTree, path: str) -> None:
    db.execute("DELETE FROM files WHERE commit_seq = ? AND path = ?", (tree._seq, path))
    if tree._base is not None and db.execute(
        "SELECT 1 FROM files WHERE commit_seq = ? AND path = ?", (tree._base, path)
    ).fetchone():
        db.execute("INSERT INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
                   "VALUES (?, ?, ?, '', 0, '', 0, 1)", (tree._seq, path, parent_dir(path)))


def _apply_operations(db: sqlite3.Connection, tree: CommitTree, count: int,
                      operations: list[AddFile | DeleteFile | DeleteFolder]) -> int:
    """Apply ``operations`` to the rows of ``tree`` (being written); returns its new file count."""
    for op in operations:
        if isinstance(op, AddFile):
            _check_no_file_dir_clash(tree, op.path)
            count += op.path not in tree
            _insert_file(db, tree._seq, op.path, op.entry)
        elif isinstance(op, DeleteFile):
            if op.path not in tree:
                raise EntryNotFound(f"File to delete not found: {op.path}")
            _delete_path(db, tree, op.path)
            count -= 1
        else:
            folder = op.path.rstrip("/")
            doomed = [path for path, _ in tree.under(folder)]
            if not doomed:
                raise EntryNotFound(f"Folder to delete not found: {op.path}")
            prefix = folder + "/"
            bounds = (prefix, prefix_upper_bound(prefix))
            db.execute("DELETE FROM files WHERE commit_seq = ? AND path >= ? AND path < ?", (tree._seq, *bounds))
            if tree._base is not None:
                db.execute("INSERT INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
                           "SELECT ?, path, dir, '', 0, '', 0, 1 FROM files "
                           "WHERE commit_seq = ? AND path >= ? AND path < ?", (tree._seq, tree._base, *bounds))
            count -= len(doomed)
    return count


def _delete_repo_rows(db: sqlite3.Connection, repo_type: str, repo_id: str) -> None:
    key = (repo_type, repo_id)
    db.execute("DELETE FROM files WHERE commit_seq IN "
               "(SELECT seq FROM commits WHERE repo_type = ? AND repo_id = ?)", key)
    for table in ("repos", "commits", "refs", "likes", "discussions", "discussion_events"):
        db.execute(f"DELETE FROM {table} WHERE repo_type = ? AND repo_id = ?", key)


def _migrate_v1(db: sqlite3.Connection) -> None:
    """The first layout kept each commit's whole tree as one JSON column: expand it into ``files`` rows.
    Runs inside the opening transaction, so a crash leaves the old layout untouched."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(commits)")}
    if "tree" not in columns:
        return
    db.execute("ALTER TABLE commits RENAME TO commits_v1")
    db.execute("DROP INDEX IF EXISTS commits_by_repo")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    repo_columns = {row[1] for row in db.execute("PRAGMA table_info(repos)")}
    for column in ("gated", "sdk"):
        if column not in repo_columns:
            db.execute(f"ALTER TABLE repos ADD COLUMN {column} TEXT")
    old = db.execute("SELECT oid, repo_type, repo_id, parent, title, message, author, date, tree FROM commits_v1 "
                     "ORDER BY rowid").fetchall()
    for oid, repo_type, repo_id, parent, title, message, author, date, tree_json in old:
        cursor = db.execute(
            "INSERT INTO commits (oid, repo_type, repo_id, parent, title, message, author, date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (oid, repo_type, repo_id, parent, title, message, author, date))
        seq = cursor.lastrowid
        tree = json.loads(tree_json)
        for path, value in tree.items():
            _insert_file(db, seq, path, FileEntry.from_json(value))
        db.execute("UPDATE commits SET n_files = ? WHERE seq = ?", (len(tree), seq))
    db.execute("DROP TABLE commits_v1")


def _check_no_file_dir_clash(tree: CommitTree, path: str) -> None:
    parts = path.split("/")
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth])
        if ancestor in tree:
            raise Conflict(f"Cannot add {path}: {ancestor} is a file.")
    if tree.is_folder(path):
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
