"""HTTP errors of the local hub, with the ``X-Error-Code`` the Hub client maps to its exception classes."""

from __future__ import annotations


class HubHTTPError(Exception):
    status: int = 400
    code: str | None = None

    def __init__(self, message: str, *, extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class BadRequest(HubHTTPError):
    status = 400


class Unauthorized(HubHTTPError):
    status = 401


class Forbidden(HubHTTPError):
    status = 403


class RepoNotFound(HubHTTPError):
    status = 404
    code = "RepoNotFound"


class RepoMoved(HubHTTPError):
    """The repo was renamed: the app answers with a redirect to the same URL under the new name."""

    status = 307


class RevisionNotFound(HubHTTPError):
    status = 404
    code = "RevisionNotFound"


class EntryNotFound(HubHTTPError):
    status = 404
    code = "EntryNotFound"


class NotFound(HubHTTPError):
    status = 404


class Conflict(HubHTTPError):
    status = 409


class PreconditionFailed(HubHTTPError):
    status = 412


class PayloadTooLarge(HubHTTPError):
    status = 413


class RangeNotSatisfiable(HubHTTPError):
    status = 416


class GatedRepoUnauthorized(HubHTTPError):
    """A gated repo's file, asked anonymously: sign in (the client raises GatedRepoError)."""

    status = 401
    code = "GatedRepo"


class GatedRepoForbidden(HubHTTPError):
    """A gated repo's file, asked by a signed-in user without access: ask for it on the repo's page."""

    status = 403
    code = "GatedRepo"
