"""Who is asking, and what they may write.

Identity: a bearer token -> a user (``TokenBook``; tokens are compared in constant time and never logged
or echoed). Permission: ``may_write(user, namespace, organizations)`` -- a user writes to their own
namespace and to the organizations they are a member of. The two stay separate so that what a token
allows (its scope) can be checked on top of the namespace permission.
"""

from __future__ import annotations

import hmac

from hubtools.localhub.errors import Forbidden, Unauthorized


class TokenBook:
    """USER -> TOKEN, looked up by token."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self._tokens: dict[str, bytes] = {}
        for user, token in (tokens or {}).items():
            self.add(user, token)

    def add(self, user: str, token: str) -> None:
        if not user or not token:
            raise ValueError("user and token must not be empty")
        self._tokens[user] = token.encode()

    def user_for(self, authorization: str | None) -> str | None:
        """The user an ``Authorization: Bearer ...`` header belongs to, or None (no header, unknown token)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found = None
        # Compare against every token (no early exit) so timing does not reveal which one nearly matched.
        for user, expected in self._tokens.items():
            if hmac.compare_digest(presented, expected):
                found = user
        return found

    def require_user(self, authorization: str | None) -> str:
        user = self.user_for(authorization)
        if user is None:
            if authorization:
                raise Unauthorized("Invalid credentials in Authorization header")
            raise Unauthorized("You must be authenticated (Authorization: Bearer <token>) to do this.")
        return user

    def users(self) -> list[str]:
        return sorted(self._tokens)

    @staticmethod
    def require_owner(user: str, namespace: str) -> None:
        """Kept for callers that know no organizations; prefer ``require_write``."""
        require_write(user, namespace, Organizations())


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
