"""Repos, commits and refs of the local hub: content-addressed blobs on disk plus one SQLite database.

Every commit's files are rows of the ``files`` table keyed by (commit ``seq``, path): either the whole
tree, or the commit's changes (added/changed files and deletion markers) over a ``base`` commit whose rows
are a whole tree (``trees.py``: ``CommitTree`` and the commit operations). The tables are in ``schema.py``;
blobs in ``blobs.py`` (``storage.blobs``), likes and discussions in ``community.py`` (``storage.community``). A path lookup, a folder listing or a short-sha lookup is one or two
indexed queries whatever the repo's size, and a commit writes the files it changes plus its parent's
change set (bounded by ``delta_limit``); only when that grows past the limit does a commit write the whole
tree again. ``benchmarks/README.md`` has the figures. Blobs referenced by a repo are the ``sha256`` of its
``files`` rows with ``deleted = 0``.

Blobs are written (temp file + os.replace) before the commit row, its file rows and the ref move happen
in ONE SQLite transaction, so a crash mid-commit leaves the repo at the old or at the new tree, never a
mix, and every old commit stays readable.

"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hubtools.localhub.access import AccessRequests
from hubtools.localhub.blobs import BlobStore, grant, private_dir
from hubtools.localhub.community import CommunityStore, add_event, comment_data

from hubtools.localhub.errors import (
    BadRequest,
    Conflict,
    PreconditionFailed,
    RepoNotFound,
    RevisionNotFound,
)
from hubtools.localhub.naming import DEFAULT_BRANCH, REPO_TYPES
from hubtools.localhub.schema import REPO_TABLES, Database, SchemaError, now_iso
from hubtools.localhub.trees import (
    AddFile,
    CommitTree,
    DeleteFile,
    DeleteFolder,
    FileEntry,
    apply_operations,
    git_blob_oid,
    insert_file,
    lfs_pointer,
    prefix_upper_bound,
    start_tree,
)

__all__ = ["DEFAULT_BRANCH", "AddFile", "Commit", "CommitTree", "DeleteFile", "DeleteFolder", "FileEntry", "Ref",
           "Repo", "Storage", "StorageError", "git_blob_oid", "lfs_pointer"]

StorageError = SchemaError  # a data folder this hubtools cannot serve (one line saying what to do)

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

REF_KINDS = {"refs/heads/": "branch", "refs/tags/": "tag", "refs/pr/": "pr"}
SHORT_SHA_MIN = 7
_HEX = frozenset("0123456789abcdef")


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


_REPO_COLUMNS = "repo_type, repo_id, owner, private, created_at, likes, downloads, gated, sdk"
_COMMIT_COLUMNS = "seq, oid, parent, title, message, author, date, base_seq, n_files"


def _repo_from_row(row: tuple) -> Repo:
    return Repo(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6], row[7], row[8])


class Storage:
    """Repos, commits and refs of one data folder, with its ``blobs`` (``BlobStore``), ``community``
    (``CommunityStore``: likes, discussions) and ``access`` (requests to gated repos) beside them on the
    same ``db``. Thread-safe: writes are
    serialized, reads use their own connection."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        private_dir(self.data_dir)  # 0700: repos, private ones included, are for the hub's user only
        self.db_path = self.data_dir / "hub.sqlite"
        self.db = Database(self.db_path)
        self.blobs = BlobStore(self.data_dir, self.db)
        self.community = CommunityStore(self.db)
        self.access = AccessRequests(self.db)  # who may read the files of a gated repo

    # ---- repos ---------------------------------------------------------------------------------

    def get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        row = self.db.connect().execute(
            # Repo names are case-insensitive, as on the Hub: any casing finds the repo (the exact one first,
            # for a data folder from before, which may hold two casings), which answers with its own name.
            f"SELECT {_REPO_COLUMNS} FROM repos WHERE repo_type = ? AND repo_id = ? COLLATE NOCASE "
            "ORDER BY repo_id = ? DESC LIMIT 1", (repo_type, repo_id, repo_id)
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
            rows = self.db.connect().execute(f"SELECT {_REPO_COLUMNS} FROM repos ORDER BY repo_type, repo_id")
        else:
            rows = self.db.connect().execute(
                f"SELECT {_REPO_COLUMNS} FROM repos WHERE repo_type = ? ORDER BY repo_id", (repo_type,))
        return [_repo_from_row(row) for row in rows.fetchall()]

    def redirect_of(self, repo_type: str, repo_id: str) -> str | None:
        """Where a moved repo went (the Hub keeps the old name working), or None."""
        row = self.db.connect().execute(
            "SELECT new_id FROM redirects WHERE repo_type = ? AND old_id = ? COLLATE NOCASE "
            "ORDER BY old_id = ? DESC LIMIT 1", (repo_type, repo_id, repo_id)
        ).fetchone()
        return row[0] if row else None

    def create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool, *,
                    sdk: str | None = None) -> Repo:
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        sha256 = self.blobs.put_bytes(gitattributes)
        entry = FileEntry(sha256, len(gitattributes), git_blob_oid(gitattributes), False)
        now = now_iso()
        with self.db.transaction() as db:
            if db.execute(
                "SELECT 1 FROM repos WHERE repo_type = ? AND repo_id = ? COLLATE NOCASE", (repo_type, repo_id)
            ).fetchone():
                raise Conflict(f"You already created this {repo_type} repo: {repo_id}.")
            db.execute(
                "INSERT INTO repos (repo_type, repo_id, owner, private, created_at, sdk) VALUES (?, ?, ?, ?, ?, ?)",
                (repo_type, repo_id, owner, int(private), now, sdk),
            )
            # A new repo takes the name over from a repo that was moved away from it.
            db.execute("DELETE FROM redirects WHERE repo_type = ? AND old_id = ? COLLATE NOCASE", (repo_type, repo_id))
            oid = self._insert_commit(db, repo_type, repo_id, None, "initial commit", "", owner, None, now)
            seq = _seq_of(db, oid)
            insert_file(db, seq, ".gitattributes", entry)
            grant(db, repo_type, repo_id, [sha256])
            db.execute("UPDATE commits SET n_files = 1 WHERE seq = ?", (seq,))
            db.execute(
                "INSERT INTO refs VALUES (?, ?, 'branch', ?, ?)", (repo_type, repo_id, DEFAULT_BRANCH, oid)
            )
        return self.require_repo(repo_type, repo_id)

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        # Blobs are shared between repos (content-addressed) and are left in place.
        with self.db.transaction() as db:
            _delete_repo_rows(db, repo_type, repo_id)
            db.execute("DELETE FROM redirects WHERE repo_type = ? AND new_id = ?", (repo_type, repo_id))

    def update_repo(self, repo_type: str, repo_id: str, **changes: object) -> None:
        """Set ``private``, ``gated`` (None, "auto" or "manual") and/or ``sdk`` of a repo."""
        allowed = {"private", "gated", "sdk"}
        if not changes or not set(changes) <= allowed:
            raise ValueError(f"update_repo takes {sorted(allowed)}, got {sorted(changes)}")
        values = {key: (int(value) if key == "private" else value) for key, value in changes.items()}
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self.db.transaction() as db:
            cursor = db.execute(f"UPDATE repos SET {assignments} WHERE repo_type = ? AND repo_id = ?",
                                (*values.values(), repo_type, repo_id))
            if cursor.rowcount == 0:
                raise RepoNotFound(f"Repository {repo_id} ({repo_type}) not found.")

    def set_counter(self, repo_type: str, repo_id: str, column: str, value: int) -> None:
        if column not in ("likes", "downloads"):
            raise ValueError(column)
        if repo_type not in REPO_TYPES:
            raise BadRequest(f"Unknown repo type {repo_type!r}.")
        with self.db.transaction() as db:
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
        return Commit(row[1], row[2], row[3], row[4], row[5], row[6], CommitTree(self.db, row[0], row[7], row[8]))

    def get_commit(self, repo_type: str, repo_id: str, oid: str) -> Commit | None:
        row = self.db.connect().execute(
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
        rows = self.db.connect().execute(
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
        rows = self.db.connect().execute(
            "SELECT kind, name, commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? ORDER BY kind, name",
            (repo_type, repo_id),
        ).fetchall()
        return [Ref(*row) for row in rows]

    def get_ref(self, repo_type: str, repo_id: str, kind: str, name: str) -> Ref | None:
        row = self.db.connect().execute(
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

        Every blob the operations refer to must already be in the store, and the caller has checked that the
        repo may name it (``blobs.owns``: the commit route does); the repo owns them from now on (its
        history). ``create_branch_from`` (a commit
        id) creates the ref when it does not exist yet (used for pull requests). ``parent_commit`` may be
        a short (7+ character) id, as the Hub takes it.
        """
        for op in operations:
            if isinstance(op, AddFile) and not self.blobs.has_blob(op.entry.sha256, op.entry.size):
                raise BadRequest(f"Blob {op.entry.sha256} for {op.path} was never uploaded (or its size differs).")
        with self.db.transaction() as db:
            return self._commit_in(db, repo_type, repo_id, branch, operations, title=title, message=message,
                                   author=author, parent_commit=parent_commit,
                                   create_branch_from=create_branch_from, branch_kind=branch_kind)

    def _commit_in(self, db: sqlite3.Connection, repo_type: str, repo_id: str, branch: str,
                   operations: list[AddFile | DeleteFile | DeleteFolder], *, title: str, message: str, author: str,
                   parent_commit: str | None, create_branch_from: str | None, branch_kind: str) -> str:
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
            db, repo_type, repo_id, head_oid, title, message, author, operations, now_iso()
        )
        seq = _seq_of(db, oid)
        base = start_tree(db, self.db, seq, *head)
        tree = CommitTree(self.db, seq, base)
        count = apply_operations(db, tree, head[2], operations)
        grant(db, repo_type, repo_id, [op.entry.sha256 for op in operations if isinstance(op, AddFile)])
        db.execute("UPDATE commits SET base_seq = ?, n_files = ? WHERE seq = ?", (base, count, seq))
        db.execute(
            "INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?, ?)", (repo_type, repo_id, branch_kind, branch, oid)
        )
        if branch_kind == "pr" and branch.isdigit():  # a commit to a pull request shows in its thread
            add_event(db, repo_type, repo_id, int(branch), "commit", author, {"subject": title, "oid": oid})
            db.execute("UPDATE discussions SET status = 'open' WHERE repo_type = ? AND repo_id = ? AND num = ? "
                       "AND status = 'draft'", (repo_type, repo_id, int(branch)))
        return oid

    def squash(self, repo_type: str, repo_id: str, branch: str, *, title: str, author: str) -> str:
        """Replace the history of ``branch`` by one commit with its current files (the Hub's super-squash).
        Commits only the branch reached are forgotten; other refs keep theirs."""
        with self.db.transaction() as db:
            row = db.execute("SELECT commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = 'branch' "
                             "AND name = ?", (repo_type, repo_id, branch)).fetchone()
            if row is None:
                raise RevisionNotFound(f"Invalid rev id: {branch} is not a branch of {repo_id}.")
            head = self.get_commit(repo_type, repo_id, row[0])
            assert head is not None
            rows = head.tree.file_rows()
            oid = self._insert_commit(db, repo_type, repo_id, None, title, "", author, "squash", now_iso())
            seq = _seq_of(db, oid)
            db.executemany("INSERT INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, 0)", [(seq, *r) for r in rows])
            db.execute("UPDATE commits SET n_files = ? WHERE seq = ?", (len(rows), seq))
            db.execute("UPDATE refs SET commit_oid = ? WHERE repo_type = ? AND repo_id = ? AND kind = 'branch' "
                       "AND name = ?", (oid, repo_type, repo_id, branch))
            _drop_unreachable_commits(db, repo_type, repo_id)
        return oid

    def copy_repo(self, repo_type: str, from_id: str, to_id: str, owner: str, private: bool) -> Repo:
        """A new repo ``to_id`` with the files of ``from_id``'s main branch in one commit (the Hub's duplicate)."""
        source, _ = self.resolve(repo_type, from_id, DEFAULT_BRANCH)
        source_repo = self.require_repo(repo_type, from_id)
        rows = source.tree.file_rows()
        with self.db.transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE repo_type = ? AND repo_id = ? COLLATE NOCASE",
                          (repo_type, to_id)).fetchone():
                raise Conflict(f"You already created this {repo_type} repo: {to_id}.")
            db.execute("INSERT INTO repos (repo_type, repo_id, owner, private, created_at, sdk) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (repo_type, to_id, owner, int(private), now_iso(), source_repo.sdk))
            db.execute("DELETE FROM redirects WHERE repo_type = ? AND old_id = ?", (repo_type, to_id))
            oid = self._insert_commit(db, repo_type, to_id, None, f"Duplicate from {from_id}", "", owner, "copy",
                                      now_iso())
            seq = _seq_of(db, oid)
            db.executemany("INSERT INTO files (commit_seq, path, dir, sha256, size, git_oid, lfs, deleted) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, 0)", [(seq, *r) for r in rows])
            db.execute("UPDATE commits SET n_files = ? WHERE seq = ?", (len(rows), seq))
            db.execute("INSERT INTO refs VALUES (?, ?, 'branch', ?, ?)", (repo_type, to_id, DEFAULT_BRANCH, oid))
            grant(db, repo_type, to_id, [row[2] for row in rows])  # a duplicate brings its files' blobs along
        return self.require_repo(repo_type, to_id)

    def move_repo(self, repo_type: str, from_id: str, to_id: str) -> None:
        """Rename a repo; the old name keeps answering (a redirect), as on the Hub, until a repo takes it."""
        with self.db.transaction() as db:
            if db.execute("SELECT 1 FROM repos WHERE repo_type = ? AND repo_id = ? COLLATE NOCASE AND repo_id != ?",
                          (repo_type, to_id, from_id)).fetchone():  # a new casing of its own name is a rename
                raise Conflict(f"A {repo_type} repo {to_id} already exists: pick another name.")
            for table in REPO_TABLES:
                db.execute(f"UPDATE {table} SET repo_id = ? WHERE repo_type = ? AND repo_id = ?",
                           (to_id, repo_type, from_id))
            db.execute("UPDATE redirects SET new_id = ? WHERE repo_type = ? AND new_id = ?", (to_id, repo_type, from_id))
            db.execute("DELETE FROM redirects WHERE repo_type = ? AND old_id = ?", (repo_type, to_id))
            db.execute("INSERT OR REPLACE INTO redirects VALUES (?, ?, ?)", (repo_type, from_id, to_id))

    def merge_pull_request(self, repo_type: str, repo_id: str, num: int, *, author: str, comment: str | None) -> str:
        """Apply a pull request's changes (its head against the commit it started from) on its target branch
        in one commit; 409 when the target changed the same files since. Returns the merge commit id."""
        pr = self.community.get_discussion(repo_type, repo_id, num)
        if not pr.is_pr or pr.status not in ("open", "draft"):
            raise BadRequest(f"#{num} is not an open pull request.")
        with self.db.transaction() as db:
            head_oid = db.execute("SELECT commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = 'pr' "
                                  "AND name = ?", (repo_type, repo_id, str(num))).fetchone()[0]
            target_oid = db.execute("SELECT commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? "
                                    "AND kind = 'branch' AND name = ?", (repo_type, repo_id, pr.target)).fetchone()
            if target_oid is None:
                raise RevisionNotFound(f"The target branch {pr.target} of #{num} no longer exists.")
            head, base, target = (self.get_commit(repo_type, repo_id, oid) for oid in (head_oid, pr.base_oid,
                                                                                        target_oid[0]))
            assert head is not None and base is not None and target is not None
            before, after, now = dict(base.tree.items()), dict(head.tree.items()), target.tree
            changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
            conflicts = [p for p in changed if now.get(p) != before.get(p) and now.get(p) != after.get(p)]
            if conflicts:
                raise Conflict(f"Cannot merge #{num}: {pr.target} changed {', '.join(conflicts[:5])} since the "
                               "pull request started.", extra={"filesWithConflicts": conflicts})
            operations: list[AddFile | DeleteFile | DeleteFolder] = [
                AddFile(p, after[p]) if p in after else DeleteFile(p)
                for p in changed if now.get(p) != after.get(p)
            ]
            oid = self._commit_in(db, repo_type, repo_id, pr.target, operations, title=pr.title,
                                  message=f"Merge pull request #{num}", author=author, parent_commit=None,
                                  create_branch_from=None, branch_kind="branch")
            db.execute("UPDATE discussions SET status = 'merged', merge_oid = ? WHERE repo_type = ? AND repo_id = ? "
                       "AND num = ?", (oid, repo_type, repo_id, num))
            if comment:
                add_event(db, repo_type, repo_id, num, "comment", author, comment_data(comment))
            add_event(db, repo_type, repo_id, num, "status-change", author, {"status": "merged"})
        return oid

    def create_ref(self, repo_type: str, repo_id: str, kind: str, name: str, commit_oid: str) -> None:
        with self.db.transaction() as db:
            if db.execute(
                "SELECT 1 FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = ? AND name = ?",
                (repo_type, repo_id, kind, name),
            ).fetchone():
                raise Conflict(f"Reference already exists: {name}")
            db.execute("INSERT INTO refs VALUES (?, ?, ?, ?, ?)", (repo_type, repo_id, kind, name, commit_oid))

    def delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str) -> None:
        with self.db.transaction() as db:
            cursor = db.execute(
                "DELETE FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = ? AND name = ?",
                (repo_type, repo_id, kind, name),
            )
            if cursor.rowcount == 0:
                raise RevisionNotFound(f"Invalid rev id: {name}")



def _drop_unreachable_commits(db: sqlite3.Connection, repo_type: str, repo_id: str) -> None:
    """Forget the commits of a repo that no ref reaches any more (and whose rows no kept commit uses as base)."""
    parents = dict(db.execute("SELECT oid, parent FROM commits WHERE repo_type = ? AND repo_id = ?",
                              (repo_type, repo_id)).fetchall())
    reachable: set[str] = set()
    for (oid,) in db.execute("SELECT commit_oid FROM refs WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id)):
        while oid is not None and oid not in reachable:
            reachable.add(oid)
            oid = parents.get(oid)
    seqs = dict(db.execute("SELECT oid, seq FROM commits WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id)))
    kept_bases = {row[0] for row in db.execute(
        f"SELECT base_seq FROM commits WHERE oid IN ({','.join('?' * len(reachable))}) AND base_seq IS NOT NULL",
        sorted(reachable))}
    for oid, seq in seqs.items():
        if oid in reachable or seq in kept_bases:  # a kept commit's base keeps its rows
            continue
        db.execute("DELETE FROM files WHERE commit_seq = ?", (seq,))
        db.execute("DELETE FROM commits WHERE seq = ?", (seq,))


def _seq_of(db: sqlite3.Connection, oid: str) -> int:
    row = db.execute("SELECT seq FROM commits WHERE oid = ?", (oid,)).fetchone()
    if row is None:  # pragma: no cover - refs always point at stored commits
        raise RevisionNotFound(f"Invalid rev id: {oid}")
    return row[0]


def _delete_repo_rows(db: sqlite3.Connection, repo_type: str, repo_id: str) -> None:
    key = (repo_type, repo_id)
    db.execute("DELETE FROM files WHERE commit_seq IN "
               "(SELECT seq FROM commits WHERE repo_type = ? AND repo_id = ?)", key)
    for table in REPO_TABLES:
        db.execute(f"DELETE FROM {table} WHERE repo_type = ? AND repo_id = ?", key)
