"""The local hub's database: its tables (the ONE copy of the schema), the migrations of older data folders,
and ``Database``, the connections every store of a data folder shares.

``storage`` (repos, commits, refs), ``blobs`` (which repo owns which blob), ``community`` (likes,
discussions), ``tokenstore`` and ``maintenance`` (fsck, gc, backup: read-only connections) all reach
``hub.sqlite`` through this module.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from hubtools.localhub.trees import FileEntry, insert_file

SCHEMA_VERSION = 3

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS repos_any_case ON repos (repo_type, repo_id COLLATE NOCASE);
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
    target TEXT, base_oid TEXT, merge_oid TEXT,
    PRIMARY KEY (repo_type, repo_id, num)
);
CREATE TABLE IF NOT EXISTS discussion_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo_type TEXT NOT NULL, repo_id TEXT NOT NULL,
    num INTEGER NOT NULL, type TEXT NOT NULL, author TEXT NOT NULL, created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_discussion ON discussion_events (repo_type, repo_id, num);
CREATE TABLE IF NOT EXISTS access_requests (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, user TEXT NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, fields TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (repo_type, repo_id, user)
);
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo_type TEXT NOT NULL, repo_id TEXT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (repo_type, repo_id, sha256)
) WITHOUT ROWID;
"""

# Tables whose rows belong to one repo (keyed by repo_type, repo_id): moved and deleted with it.
REPO_TABLES = ("repos", "commits", "refs", "likes", "discussions", "discussion_events", "repo_blobs",
               "access_requests")

# Columns added to tables of layout 2 after data folders of that layout existed (nullable, so old rows read).
_LATER_COLUMNS = {"discussions": ("target", "base_oid", "merge_oid"), "repos": ("gated", "sdk")}


def now_iso() -> str:
    """The time as every table stores it (UTC, milliseconds, as the Hub's JSON shows dates)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SchemaError(Exception):
    """A data folder this hubtools cannot serve (one line saying what to do)."""


def _create_tables(db: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    _add_missing_columns(db)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, columns in _LATER_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


def _migrate_v1(db: sqlite3.Connection) -> None:
    """The first layout kept each commit's whole tree as one JSON column: expand it into ``files`` rows.
    Runs inside the opening transaction, so a crash leaves the old layout untouched."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(commits)")}
    if "tree" not in columns:
        return
    db.execute("ALTER TABLE commits RENAME TO commits_v1")
    db.execute("DROP INDEX IF EXISTS commits_by_repo")
    _create_tables(db)
    old = db.execute("SELECT oid, repo_type, repo_id, parent, title, message, author, date, tree FROM commits_v1 "
                     "ORDER BY rowid").fetchall()
    for oid, repo_type, repo_id, parent, title, message, author, date, tree_json in old:
        cursor = db.execute(
            "INSERT INTO commits (oid, repo_type, repo_id, parent, title, message, author, date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (oid, repo_type, repo_id, parent, title, message, author, date))
        seq = cursor.lastrowid
        tree = json.loads(tree_json)
        for path, value in tree.items():
            insert_file(db, seq, path, FileEntry.from_json(value))
        db.execute("UPDATE commits SET n_files = ? WHERE seq = ?", (len(tree), seq))
    db.execute("DROP TABLE commits_v1")


def _migrate_v2(db: sqlite3.Connection, version: int) -> None:
    """Layout 3 adds ``repo_blobs`` (which repo may name which blob): a repo owns every blob its commits name."""
    if version >= 3:
        return
    db.execute("INSERT OR IGNORE INTO repo_blobs (repo_type, repo_id, sha256) SELECT DISTINCT c.repo_type, "
               "c.repo_id, f.sha256 FROM files f JOIN commits c ON c.seq = f.commit_seq WHERE f.deleted = 0")


def private_file(path: Path) -> None:
    """Create ``path`` (if missing) readable by its owner only; an existing one is narrowed to 0600."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


class Database:
    """``hub.sqlite`` of one data folder: one connection per thread, writes serialized in transactions.

    Opening it creates the tables or migrates an older layout (in one transaction)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Created 0600 before SQLite opens it: its -wal and -shm files take the database file's mode.
        private_file(self.path)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaError(f"{self.path.parent} was written by a newer hubtools (data layout {version}, "
                                  f"this one reads up to {SCHEMA_VERSION}): upgrade hubtools to serve it.")
            _migrate_v1(db)
            _create_tables(db)
            _migrate_v2(db, version)
            self.found_version = version  # the layout it had before this opening (0: new)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (reads; writes go through ``transaction``)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on any error."""
        with self._write_lock:
            db = self.connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")


def open_read_only(db_path: Path) -> sqlite3.Connection:
    """A read-only connection for upkeep beside a live server; SchemaError unless the layout is this one's."""
    db = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        db.close()
        raise SchemaError(f"{Path(db_path).parent} has data layout {version}, this hubtools reads {SCHEMA_VERSION}: "
                          "start the hub once with this hubtools (it migrates the folder), then run this again.")
    return db
