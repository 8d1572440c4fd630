"""Bearer tokens -> users. Tokens are compared in constant time and never logged or echoed."""

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

    @staticmethod
    def require_owner(user: str, namespace: str) -> None:
        if user != namespace:
            raise Forbidden(f"You don't have the rights to write to the namespace {namespace!r} (you are {user!r}).")
