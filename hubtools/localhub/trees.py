"""A commit's files in the local hub's database: ``FileEntry``, the operations of a commit, and
``CommitTree``, the path -> entry mapping read from the ``files`` table.

A commit's rows are either its whole tree, or its changes over a ``base`` commit whose rows are a whole
tree: added or changed files, and deletion markers (``deleted = 1``). Reads are at most two indexed queries
whatever the repo's size; a commit writes the files it changes plus its parent's change set, and writes
the whole tree again only when that set passes ``delta_limit``.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from hubtools.localhub.errors import Conflict, EntryNotFound


class Connects(Protocol):
    """What a tree needs: a connection to the database (``schema.Database``; no import back, no cycle)."""

    def connect(self) -> sqlite3.Connection: ...


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


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

    def __init__(self, database: Connects, seq: int, base: int | None = None, count: int | None = None) -> None:
        self._database = database
        self._seq = seq
        self._base = base
        self._count = count

    def _db(self) -> sqlite3.Connection:
        return self._database.connect()

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

    def file_rows(self) -> list[tuple]:
        """(path, dir, sha256, size, git_oid, lfs) of every file: what a copy of the whole tree writes."""
        return self._effective("path, dir, sha256, size, git_oid, lfs", "1", {})

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



def insert_file(db: sqlite3.Connection, seq: int, path: str, entry: FileEntry) -> None:
    db.execute(
        "INSERT OR REPLACE INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        (seq, path, parent_dir(path), entry.sha256, entry.size, entry.git_oid, int(entry.lfs)),
    )


def delta_limit(n_files: int) -> int:
    """How many change rows a commit may carry over its base before the next commit writes a whole tree:
    enough that a run of small commits copies few rows, few enough that reads stay two lookups."""
    return max(256, 4 * math.isqrt(n_files))


def start_tree(db: sqlite3.Connection, database: Connects, seq: int, head_seq: int, head_base: int | None,
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
    head_tree = CommitTree(database, head_seq, head_base)
    rows = head_tree.file_rows()
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


def apply_operations(db: sqlite3.Connection, tree: CommitTree, count: int,
                      operations: list[AddFile | DeleteFile | DeleteFolder]) -> int:
    """Apply ``operations`` to the rows of ``tree`` (being written); returns its new file count."""
    for op in operations:
        if isinstance(op, AddFile):
            _check_no_file_dir_clash(tree, op.path)
            count += op.path not in tree
            insert_file(db, tree._seq, op.path, op.entry)
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


def _check_no_file_dir_clash(tree: CommitTree, path: str) -> None:
    parts = path.split("/")
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth])
        if ancestor in tree:
            raise Conflict(f"Cannot add {path}: {ancestor} is a file.")
    if tree.is_folder(path):
        raise Conflict(f"Cannot add {path}: it is a folder.")
