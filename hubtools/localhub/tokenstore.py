"""Access tokens kept in the hub's data folder, as SHA-256 hashes only.

``hubtools hub token add`` writes a row here and shows the token once; the server looks every presented
token up here on every request, so an added token works and a revoked one fails at once, without a
restart. A token is 40 random characters from ``secrets`` (about 238 bits), so a plain SHA-256 of it
cannot be reversed or guessed; no salt or slow hash is needed for such tokens (as for GitHub's and the
Hub's own tokens), and the lookup by hash leaks nothing an attacker can use.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import string
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROLES = ("read", "write")
TOKEN_PREFIX = "hf_local_"  # the Hub's hf_ style, marked local so nobody mistakes it for a huggingface.co token
_TOKEN_ALPHABET = string.ascii_letters + string.digits
_TOKEN_LENGTH = 40

_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_tokens (
    token_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, user TEXT NOT NULL,
    role TEXT NOT NULL, orgs TEXT NOT NULL DEFAULT '', name TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL
);
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(_TOKEN_LENGTH))


@dataclass(frozen=True)
class StoredToken:
    """What the store knows of a token: never the token itself."""

    token_id: str
    user: str
    role: str
    orgs: tuple[str, ...]  # empty: every namespace the user may write; else only these
    name: str
    created_at: str


class TokenStore:
    """The ``access_tokens`` table of ``hub.sqlite``. Thread-safe (one connection per thread)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._local = threading.local()
        self._connect().executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def add(self, user: str, role: str, orgs: tuple[str, ...] = (), name: str = "") -> tuple[str, StoredToken]:
        """A new token for ``user``: (the token, shown once by the caller; what is stored)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        token = new_token()
        stored = StoredToken(
            token_id=secrets.token_hex(4),
            user=user,
            role=role,
            orgs=tuple(orgs),
            name=name,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        self._connect().execute(
            "INSERT INTO access_tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
            (stored.token_id, token_hash(token), user, role, ",".join(orgs), name, stored.created_at),
        )
        return token, stored

    def revoke(self, token_id: str) -> StoredToken | None:
        """Delete the token with this id; the revoked token, or None when there was none."""
        found = [token for token in self.list() if token.token_id == token_id]
        if found:
            self._connect().execute("DELETE FROM access_tokens WHERE token_id = ?", (token_id,))
        return found[0] if found else None

    def list(self) -> list[StoredToken]:
        rows = self._connect().execute(
            "SELECT token_id, user, role, orgs, name, created_at FROM access_tokens ORDER BY user, created_at"
        ).fetchall()
        return [_stored(row) for row in rows]

    def find(self, token: str) -> StoredToken | None:
        row = self._connect().execute(
            "SELECT token_id, user, role, orgs, name, created_at FROM access_tokens WHERE token_sha256 = ?",
            (token_hash(token),),
        ).fetchone()
        return _stored(row) if row else None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _stored(row: tuple) -> StoredToken:
    return StoredToken(row[0], row[1], row[2], tuple(org for org in row[3].split(",") if org), row[4], row[5])
