"""Who is asking, and what they may write.

Identity: a bearer token -> an ``Identity`` (user, role, and the namespaces the token may write). Tokens
come from three places, all resolved by ``TokenBook.identify`` (the ONE function the API and the pages
call):

- the token store in the data folder (``tokenstore``; ``hubtools hub token add``), looked up on every
  request, so adding and revoking need no restart;
- a tokens file (``--tokens-file``), one ``USER=TOKEN [read|write]`` entry per line, re-read when it changes;
- ``--token USER=TOKEN`` (tests and demos: arguments are visible to every local user).

Only SHA-256 hashes of the tokens are kept, even in memory; comparisons are constant-time; no token is
ever logged or echoed in an error.

Permission: ``may_write(user, namespace, organizations)`` -- a user writes to their own namespace and to
the organizations they are a member of. The two stay separate: what a token allows (its role and
``--org`` restriction, ``Identity.check_may_write``) is checked on top of the namespace permission.
"""

from __future__ import annotations

import hmac
import logging
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hubtools.errors import ConfigError
from hubtools.localhub.errors import Forbidden, HubHTTPError, Unauthorized
from hubtools.localhub.naming import check_name_part
from hubtools.localhub.tokenstore import ROLES, TokenStore, token_hash

logger = logging.getLogger("hubtools.localhub")


# The user `hub serve --with-tiny-model` publishes as; no token of anyone else may name it.
INTERNAL_PUBLISHER = "hubtools"


@dataclass(frozen=True)
class Identity:
    """The user behind a token and what the token allows, like the Hub's read and write tokens."""

    user: str
    role: str = "write"  # "read": reads what the user may see, 403 on every write
    orgs: tuple[str, ...] = ()  # when set, the token writes only in these namespaces

    def check_may_act(self) -> None:
        """403 for a read token: it changes nothing (no commit, like, comment or pull request)."""
        if self.role != "write":
            raise Forbidden("This is a read token: it cannot write. Use a write token (hubtools hub token add --write).")

    def check_may_write(self, namespace: str) -> None:
        """403 unless this token's role and restriction allow writing ``namespace``."""
        self.check_may_act()
        if self.orgs and namespace not in self.orgs:
            raise Forbidden(
                f"This token is restricted to the namespaces {', '.join(self.orgs)}: it cannot write to {namespace!r}."
            )


def parse_token_entries(lines: Iterable[str], source: str) -> dict[str, Identity]:
    """``USER=TOKEN [read|write]`` lines (blank lines and ``#`` comments skipped) -> token hash -> Identity.

    Errors name the source and line, never the token.
    """
    entries: dict[str, Identity] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        entry, _, role = line.partition(" ")
        user, sep, token = entry.partition("=")
        role = role.strip() or "write"
        if not sep or not user or not token:
            raise ConfigError(f"{where}: expected USER=TOKEN [read|write], with a non-empty user and token.")
        if role not in ROLES:
            raise ConfigError(f"{where}: the role after the token must be 'read' or 'write'.")
        try:
            check_name_part(user, "user name")
        except HubHTTPError:
            # The name is not echoed: a line this wrong may be a pasted token.
            raise ConfigError(f"{where}: the user name is not valid (letters, digits, '-', '_', '.').") from None
        digest = token_hash(token)
        if digest in entries:
            raise ConfigError(f"{where}: this token is already given to another entry; give each entry its own.")
        entries[digest] = Identity(user, role)
    return entries


def tokens_file_warning(path: Path) -> str | None:
    """A warning when other users can read the tokens file (as ssh does for private keys)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"the tokens file {path} can be read by other users (mode {stat.S_IMODE(mode):o}): chmod 600 it."
    return None


class TokenBook:
    """Resolves bearer tokens: fixed tokens (``--token``), a tokens file (re-read on change), the store."""

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        *,
        tokens_file: Path | None = None,
        store: TokenStore | None = None,
    ) -> None:
        self._fixed: dict[str, Identity] = {}
        for user, token in (tokens or {}).items():
            self.add(user, token)
        self.store = store
        self.tokens_file = Path(tokens_file) if tokens_file is not None else None
        self._file_entries: dict[str, Identity] = {}
        self._file_signature: tuple | None = None
        self._file_lock = threading.Lock()
        if self.tokens_file is not None:
            self._file_entries = self._read_tokens_file()  # a bad file stops the start (ConfigError)
            self._file_signature = self._signature()

    def add(self, user: str, token: str, role: str = "write") -> None:
        if not user or not token:
            raise ValueError("user and token must not be empty")
        self._fixed[token_hash(token)] = Identity(user, role)

    # ---- the tokens file -----------------------------------------------------------------------

    def _signature(self) -> tuple | None:
        try:
            info = self.tokens_file.stat()  # type: ignore[union-attr]
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _read_tokens_file(self) -> dict[str, Identity]:
        path = self.tokens_file
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"Cannot read the tokens file {path}: {reason}.") from None
        return parse_token_entries(text.splitlines(), str(path))

    def _refresh_tokens_file(self) -> None:
        if self.tokens_file is None:
            return
        signature = self._signature()
        if signature == self._file_signature:
            return
        with self._file_lock:
            if signature == self._file_signature:
                return
            if signature is None:
                logger.warning("local hub: the tokens file %s is gone: its tokens no longer work.", self.tokens_file)
                self._file_entries = {}
            else:
                try:
                    self._file_entries = self._read_tokens_file()
                except ConfigError as error:
                    # Fail closed: an edit that broke the file may have been the removal of a token, so no
                    # token of the file works until it is fixed. The message never holds a token.
                    logger.warning("local hub: %s None of the file's tokens work until it is fixed.", error)
                    self._file_entries = {}
            self._file_signature = signature

    # ---- resolution ----------------------------------------------------------------------------

    def identify(self, token: str) -> Identity | None:
        """The identity a bearer token stands for, or None. THE one place a token becomes an identity."""
        if not token:
            return None
        digest = token_hash(token).encode()
        self._refresh_tokens_file()
        found = None
        # Compare against every fixed token (no early exit) so timing does not reveal which one nearly matched.
        for known, identity in (*self._fixed.items(), *self._file_entries.items()):
            if hmac.compare_digest(digest, known.encode()):
                found = identity
        if found is None and self.store is not None:
            stored = self.store.find(token)
            if stored is not None:
                found = Identity(stored.user, stored.role, stored.orgs)
        return found

    def resolve(self, authorization: str | None) -> Identity | None:
        """The identity of an ``Authorization`` header; None without one; 401 for a token nobody knows."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        identity = self.identify(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise Unauthorized("Invalid credentials in Authorization header")
        return identity

    def require(self, authorization: str | None) -> Identity:
        identity = self.resolve(authorization)
        if identity is None:
            raise Unauthorized("You must be authenticated (Authorization: Bearer <token>) to do this.")
        return identity

    def require_user(self, authorization: str | None) -> str:
        return self.require(authorization).user


class Organizations:
    """Organization name -> its members (users). Members write to the organization's namespace."""

    def __init__(self, members: dict[str, list[str] | set[str]] | None = None) -> None:
        self._members: dict[str, frozenset[str]] = {
            name: frozenset(users) for name, users in (members or {}).items()
        }

    def names(self) -> list[str]:
        return sorted(self._members)

    def members_of(self, organization: str) -> frozenset[str]:
        return self._members.get(organization, frozenset())

    def of_user(self, user: str) -> list[str]:
        """The organizations ``user`` is a member of, sorted."""
        return sorted(name for name, members in self._members.items() if user in members)

    def __contains__(self, name: object) -> bool:
        return name in self._members


def may_write(user: str | None, namespace: str, organizations: Organizations) -> bool:
    """The one rule for writes: a user writes to their own namespace and to their organizations'."""
    return user is not None and (user == namespace or user in organizations.members_of(namespace))


def require_write(user: str, namespace: str, organizations: Organizations) -> None:
    if not may_write(user, namespace, organizations):
        raise Forbidden(f"You don't have the rights to write to the namespace {namespace!r} (you are {user!r}).")
