"""Likes, discussions and pull-request threads of the local hub's repos: ``CommunityStore``, which
``Storage`` holds as ``storage.community`` (same ``Database``; the tables are in ``schema.py``).

A pull request is also a ref ``refs/pr/N``; committing to it and merging it are commit operations, so they
live in ``storage.py`` and call ``add_event`` here in their own transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from hubtools.localhub.errors import NotFound, RevisionNotFound
from hubtools.localhub.naming import DEFAULT_BRANCH
from hubtools.localhub.schema import Database, now_iso


@dataclass(frozen=True)
class Discussion:
    """A discussion or pull request (they share one numbering per repo, as on the Hub)."""

    num: int
    is_pr: bool
    title: str
    author: str
    status: str  # "open", "closed", "merged" or "draft"
    created_at: str
    target: str | None  # pull requests: the branch they merge into
    base_oid: str | None  # pull requests: the commit of ``target`` they started from
    merge_oid: str | None  # merged pull requests: the merge commit


@dataclass(frozen=True)
class DiscussionEvent:
    id: int
    type: str  # "comment", "status-change", "title-change" or "commit"
    author: str
    created_at: str
    data: dict


_DISCUSSION_COLUMNS = "num, is_pr, title, author, status, created_at, target, base_oid, merge_oid"


def comment_data(text: str) -> dict:
    return {"edited": False, "hidden": False, "latest": {"raw": text, "html": None}}


def add_event(db: sqlite3.Connection, repo_type: str, repo_id: str, num: int, kind: str, author: str,
              data: dict) -> int:
    cursor = db.execute("INSERT INTO discussion_events (repo_type, repo_id, num, type, author, created_at, data) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (repo_type, repo_id, num, kind, author, now_iso(),
                                                         json.dumps(data)))
    return int(cursor.lastrowid)


def next_number(db: sqlite3.Connection, repo_type: str, repo_id: str) -> int:
    """The next discussion / pull-request number (they share one sequence, as on the Hub)."""
    refs = [int(row[0]) for row in db.execute(
        "SELECT name FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = 'pr'", (repo_type, repo_id))
        if row[0].isdigit()]
    discussions = db.execute(
        "SELECT COALESCE(MAX(num), 0) FROM discussions WHERE repo_type = ? AND repo_id = ?", (repo_type, repo_id)
    ).fetchone()[0]
    return max([discussions, *refs]) + 1


class CommunityStore:
    """Likes and discussions of the repos of one ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- likes ---------------------------------------------------------------------------------

    def like(self, repo_type: str, repo_id: str, user: str, liked: bool = True) -> None:
        """Like (or unlike) a repo as ``user``; the repo's like count follows (an admin-set count is the base)."""
        with self.db.transaction() as db:
            if liked:
                changed = db.execute("INSERT OR IGNORE INTO likes VALUES (?, ?, ?, ?)",
                                     (repo_type, repo_id, user, now_iso())).rowcount
                delta = changed
            else:
                delta = -db.execute("DELETE FROM likes WHERE repo_type = ? AND repo_id = ? AND user = ?",
                                    (repo_type, repo_id, user)).rowcount
            if delta:
                db.execute("UPDATE repos SET likes = MAX(likes + ?, 0) WHERE repo_type = ? AND repo_id = ?",
                           (delta, repo_type, repo_id))

    def likers(self, repo_type: str, repo_id: str) -> list[str]:
        rows = self.db.connect().execute("SELECT user FROM likes WHERE repo_type = ? AND repo_id = ? ORDER BY liked_at",
                                       (repo_type, repo_id))
        return [row[0] for row in rows]

    def liked_by(self, user: str) -> list[tuple[str, str, str]]:
        """(repo_type, repo_id, liked_at) of every repo ``user`` likes, newest first."""
        rows = self.db.connect().execute("SELECT repo_type, repo_id, liked_at FROM likes WHERE user = ? "
                                       "ORDER BY liked_at DESC", (user,))
        return [tuple(row) for row in rows]

    # ---- discussions and pull requests ---------------------------------------------------------

    def create_discussion(self, repo_type: str, repo_id: str, *, title: str, author: str, description: str,
                          pull_request: bool, status: str | None = None, target: str = DEFAULT_BRANCH) -> int:
        """Open a discussion, or a pull request (ref ``refs/pr/N`` from the head of ``target``); returns N."""
        now = now_iso()
        with self.db.transaction() as db:
            num = next_number(db, repo_type, repo_id)
            base_oid = None
            if pull_request:
                row = db.execute("SELECT commit_oid FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = 'branch' "
                                 "AND name = ?", (repo_type, repo_id, target)).fetchone()
                if row is None:
                    raise RevisionNotFound(f"Invalid rev id: {target} is not a branch of {repo_id}.")
                base_oid = row[0]
                db.execute("INSERT OR REPLACE INTO refs VALUES (?, ?, 'pr', ?, ?)", (repo_type, repo_id, str(num), base_oid))
            db.execute("INSERT INTO discussions (repo_type, repo_id, num, is_pr, title, author, status, created_at, "
                       "target, base_oid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (repo_type, repo_id, num, int(pull_request), title, author,
                        status or ("draft" if pull_request else "open"), now, target if pull_request else None,
                        base_oid))
            if description:
                add_event(db, repo_type, repo_id, num, "comment", author, comment_data(description))
        return num

    def delete_discussion(self, repo_type: str, repo_id: str, num: int) -> None:
        with self.db.transaction() as db:
            for table in ("discussions", "discussion_events"):
                db.execute(f"DELETE FROM {table} WHERE repo_type = ? AND repo_id = ? AND num = ?",
                           (repo_type, repo_id, num))
            db.execute("DELETE FROM refs WHERE repo_type = ? AND repo_id = ? AND kind = 'pr' AND name = ?",
                       (repo_type, repo_id, str(num)))

    def list_discussions(self, repo_type: str, repo_id: str) -> list[Discussion]:
        rows = self.db.connect().execute(f"SELECT {_DISCUSSION_COLUMNS} FROM discussions WHERE repo_type = ? "
                                       "AND repo_id = ? ORDER BY num DESC", (repo_type, repo_id))
        return [Discussion(*row) for row in rows]

    def get_discussion(self, repo_type: str, repo_id: str, num: int) -> Discussion:
        row = self.db.connect().execute(f"SELECT {_DISCUSSION_COLUMNS} FROM discussions WHERE repo_type = ? "
                                      "AND repo_id = ? AND num = ?", (repo_type, repo_id, num)).fetchone()
        if row is None:
            raise NotFound(f"Discussion #{num} of {repo_id} not found.")
        return Discussion(*row)

    def discussion_events(self, repo_type: str, repo_id: str, num: int) -> list[DiscussionEvent]:
        rows = self.db.connect().execute("SELECT id, type, author, created_at, data FROM discussion_events "
                                       "WHERE repo_type = ? AND repo_id = ? AND num = ? ORDER BY id",
                                       (repo_type, repo_id, num))
        return [DiscussionEvent(row[0], row[1], row[2], row[3], json.loads(row[4])) for row in rows]

    def add_discussion_event(self, repo_type: str, repo_id: str, num: int, kind: str, author: str, data: dict,
                             **changes: str) -> DiscussionEvent:
        """Add a comment / status-change / title-change event, and apply ``changes`` (status, title)."""
        with self.db.transaction() as db:
            for column, value in changes.items():
                if column not in ("status", "title"):
                    raise ValueError(column)
                db.execute(f"UPDATE discussions SET {column} = ? WHERE repo_type = ? AND repo_id = ? AND num = ?",
                           (value, repo_type, repo_id, num))
            event_id = add_event(db, repo_type, repo_id, num, kind, author, data)
        return next(e for e in self.discussion_events(repo_type, repo_id, num) if e.id == event_id)
