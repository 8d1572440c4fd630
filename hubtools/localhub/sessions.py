"""Browser sign-in for the pages: a Hub token typed once, a random session id in an HttpOnly, SameSite
cookie afterwards. The token stays in the server's memory (never in the cookie, a page or a log) and is
checked against the token book on every request, so a revoked token signs its sessions out."""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from hubtools.localhub.auth import Identity, TokenBook

COOKIE = "hubtools_session"
MAX_SESSIONS = 10_000


def identity_of(tokens: TokenBook, session: Session) -> Identity | None:
    """What the session's token allows now (a read token may look but not like)."""
    return tokens.identify(session.token)


@dataclass(frozen=True)
class Session:
    user: str
    token: str
    csrf: str  # put in every form of the session's pages and checked on every POST


class SessionBook:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def sign_in(self, tokens: TokenBook, token: str) -> tuple[str, Session] | None:
        token = token.strip()
        identity = tokens.identify(token) if token else None
        if identity is None:
            return None
        session_id = secrets.token_urlsafe(32)
        session = Session(identity.user, token, secrets.token_urlsafe(16))
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session_id] = session
        return session_id, session

    def current(self, request: Request, tokens: TokenBook) -> Session | None:
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            return None
        identity = tokens.identify(session.token)
        if identity is None or identity.user != session.user:  # revoked or reassigned meanwhile
            self.sign_out(session_id)
            return None
        return session

    def sign_out(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)


def csrf_ok(session: Session | None, presented: str | None) -> bool:
    return session is not None and presented is not None and hmac.compare_digest(session.csrf, presented)


def set_cookie(response: Response, request: Request, session_id: str) -> None:
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
