"""Who may use the studio: whoever holds the token printed once at start, as Jupyter does.

The browser opens ``/?token=...`` once and gets a random session id in an HttpOnly, SameSite=Strict
cookie; the address bar then drops the token. API clients send ``Authorization: Bearer TOKEN``. The token
lives in this process's memory only: never in a file, a log or a page.
"""

from __future__ import annotations

import hmac
import secrets
import threading

from fastapi import Request
from fastapi.responses import Response

COOKIE = "hubtools_studio"
MAX_SESSIONS = 1000


class StudioAuth:
    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self._sessions: set[str] = set()
        self._lock = threading.Lock()

    def token_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode())  # type: ignore[union-attr]

    def new_session(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop()
            self._sessions.add(session)
        return session

    def allowed(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and self.token_ok(header[7:].strip()):
            return True
        session = request.cookies.get(COOKIE)
        with self._lock:
            return bool(session) and session in self._sessions

    def set_cookie(self, response: Response, request: Request) -> None:
        response.set_cookie(COOKIE, self.new_session(), httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
