"""Access requests of gated repos, as the Hub keeps them: one row per (repo, user), ``pending``,
``accepted`` or ``rejected``. A ``gated="auto"`` repo accepts a request as it arrives; a ``"manual"`` one
waits for a writer of the repo (``accept_access_request``, ``reject_access_request``, ``grant_access``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from hubtools.localhub.errors import BadRequest, NotFound
from hubtools.localhub.schema import Database, now_iso

STATUSES = ("pending", "accepted", "rejected")


@dataclass(frozen=True)
class AccessRequest:
    user: str
    status: str
    created_at: str
    fields: dict

    def request_id(self, repo_type: str, repo_id: str) -> str:
        """A stable id for the request (the Hub's ``requestId``), from the repo and the user."""
        return hashlib.sha1(f"{repo_type}/{repo_id}/{self.user}".encode()).hexdigest()[:24]


class AccessRequests:
    """The ``access_requests`` rows of one ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, repo_type: str, repo_id: str, user: str) -> AccessRequest | None:
        row = self.db.connect().execute(
            "SELECT user, status, created_at, fields FROM access_requests WHERE repo_type = ? AND repo_id = ? "
            "AND user = ?", (repo_type, repo_id, user)).fetchone()
        return AccessRequest(row[0], row[1], row[2], json.loads(row[3])) if row else None

    def has_access(self, repo_type: str, repo_id: str, user: str) -> bool:
        request = self.get(repo_type, repo_id, user)
        return request is not None and request.status == "accepted"

    def list(self, repo_type: str, repo_id: str, status: str) -> list[AccessRequest]:
        rows = self.db.connect().execute(
            "SELECT user, status, created_at, fields FROM access_requests WHERE repo_type = ? AND repo_id = ? "
            "AND status = ? ORDER BY created_at, user", (repo_type, repo_id, status)).fetchall()
        return [AccessRequest(row[0], row[1], row[2], json.loads(row[3])) for row in rows]

    def ask(self, repo_type: str, repo_id: str, user: str, *, auto_accept: bool, fields: dict | None = None) -> str:
        """Record ``user``'s request (a second one keeps the first's answer); returns its status."""
        with self.db.transaction() as db:
            db.execute("INSERT OR IGNORE INTO access_requests VALUES (?, ?, ?, ?, ?, ?)",
                       (repo_type, repo_id, user, "accepted" if auto_accept else "pending", now_iso(),
                        json.dumps(fields or {})))
        request = self.get(repo_type, repo_id, user)
        assert request is not None
        return request.status

    def handle(self, repo_type: str, repo_id: str, user: str, status: str) -> None:
        """Move a request to ``status``: 404 when there is none, or when it already has that status."""
        if status not in STATUSES:
            raise BadRequest(f"'status' must be one of {', '.join(STATUSES)}.")
        with self.db.transaction() as db:
            row = db.execute("SELECT status FROM access_requests WHERE repo_type = ? AND repo_id = ? AND user = ?",
                             (repo_type, repo_id, user)).fetchone()
            if row is None:
                raise NotFound(f"{user} has no access request on {repo_id}.")
            if row[0] == status:
                raise NotFound(f"The access request of {user} on {repo_id} is already {status}.")
            db.execute("UPDATE access_requests SET status = ? WHERE repo_type = ? AND repo_id = ? AND user = ?",
                       (status, repo_type, repo_id, user))

    def grant(self, repo_type: str, repo_id: str, user: str) -> None:
        """Give ``user`` access without a request: 400 when they already have it."""
        with self.db.transaction() as db:
            row = db.execute("SELECT status FROM access_requests WHERE repo_type = ? AND repo_id = ? AND user = ?",
                             (repo_type, repo_id, user)).fetchone()
            if row is not None and row[0] == "accepted":
                raise BadRequest(f"{user} already has access to {repo_id}.")
            db.execute("INSERT OR REPLACE INTO access_requests VALUES (?, ?, ?, 'accepted', ?, '{}')",
                       (repo_type, repo_id, user, now_iso()))
