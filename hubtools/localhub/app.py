"""The FastAPI app: the subset of the Hub's HTTP API that huggingface_hub, datasets and diffusers use.

Routes match the *raw* (still percent-encoded) request path, because the clients quote revisions with
``safe=""`` (``refs%2Fpr%2F1`` is one segment) and paths in a tree with ``safe=""`` too; every path
parameter is unquoted by the routes, then validated by ``naming`` before it reaches storage.

The routes live in one module per endpoint group (``routes_*.py``) and share one ``HubContext``
(``context.py``): storage, tokens, settings and the LFS upload tickets.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubtools.localhub import (
    pages,
    routes_account,
    routes_commit,
    routes_discussions,
    routes_download,
    routes_gates,
    routes_info,
    routes_likes,
    routes_refs,
    routes_repos,
    routes_upload,
)
from hubtools.localhub.auth import Organizations, TokenBook
from hubtools.localhub.context import HubContext, HubSettings, error_response
from hubtools.localhub.errors import HubHTTPError, RangeNotSatisfiable, RepoMoved
from hubtools.localhub.storage import Storage
from hubtools.localhub.xet import routes_tokens as xet_routes_tokens
from hubtools.localhub.xet.routes_cas import CAS_PREFIX, create_cas_app
from hubtools.localhub.xet.store import XetStore

__all__ = ["HubSettings", "RawPathApp", "create_app"]

logger = logging.getLogger("hubtools.localhub")

# Included in this order, which is the order the routes match in: where two paths overlap, the first wins.
ROUTERS = (
    routes_account.router,
    routes_likes.router,  # before routes_info: /api/users/{user}/likes would match a repo's info route
    routes_repos.router,
    routes_discussions.router,
    routes_gates.router,
    routes_info.router,
    routes_refs.router,
    routes_upload.router,
    xet_routes_tokens.router,
    routes_commit.router,
    routes_download.router,
    pages.router,  # the HTML pages last: every API path above wins over /{namespace}/{name}/...
)


async def reject_invalid_credentials(request: Request) -> None:
    """A token that is sent but unknown is 401 on every route, even where no token is needed (as on the
    Hub), so a typo in a token never silently reads as anonymous."""
    authorization = request.headers.get("authorization")
    if authorization:
        request.app.state.hub.viewer(request)


def create_app(storage: Storage, tokens: TokenBook, settings: HubSettings | None = None,
               organizations: Organizations | None = None) -> Any:
    """The ASGI app serving ``storage``. Wrapped so routes see the raw path (see module docstring)."""
    api = FastAPI(title="hubtools local hub", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(reject_invalid_credentials)])
    api.state.hub = HubContext(storage, tokens, settings or HubSettings(),
                               organizations=organizations or Organizations())

    @api.exception_handler(HubHTTPError)
    async def _hub_error(request: Request, error: HubHTTPError) -> Response:
        if isinstance(error, RepoMoved):
            return moved_repo_redirect(request, error)
        headers = {}
        if isinstance(error, RangeNotSatisfiable) and "size" in error.extra:
            headers["Content-Range"] = f"bytes */{error.extra.pop('size')}"
        if "repo_commit" in error.extra:
            headers["X-Repo-Commit"] = error.extra.pop("repo_commit")
        return error_response(error.status, error.message, error.code, error.extra, headers)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404 and pages.wants_html(request):
            return pages.not_found_page(request)  # a browser on an unknown page; API clients keep the JSON
        message = "Not found: no such endpoint." if error.status_code == 404 else str(error.detail)
        return error_response(error.status_code, message)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        return error_response(400, "Malformed request.")

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:  # pragma: no cover - a bug
        logger.exception("local hub: unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal error of the local hub (a bug in hubtools).")

    # The Xet CAS API: its own app (Xet access tokens, not hub tokens), matched before every route below.
    api.state.xet = XetStore(storage)
    api.mount(CAS_PREFIX, create_cas_app(api.state.xet))
    for router in ROUTERS:
        api.include_router(router)
    return RawPathApp(api)


def moved_repo_redirect(request: Request, error: RepoMoved) -> Response:
    """The same request under the repo's new name (307 keeps the method and body), as the Hub answers for
    a renamed repo; the clients follow it."""
    old_id, new_id = error.extra["moved_from"], error.extra["moved_to"]
    raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or request.url.path
    target = (raw + "/").replace(f"/{old_id}/", f"/{new_id}/", 1)[:-1]
    query = request.url.query
    location = target + (f"?{query}" if query else "")
    return Response(status_code=307, headers={"Location": location, "X-Error-Message": error.message})


MAX_HEADER_BYTES = 32 * 1024


class RawPathApp:
    """Routes on the raw request path so that percent-encoded slashes stay inside one path segment, and
    refuses oversized request headers with a clean 431 before any route sees them."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header_bytes = sum(len(key) + len(value) + 4 for key, value in scope.get("headers", []))
            if header_bytes + len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_HEADER_BYTES:
                message = f"Request headers too large: at most {MAX_HEADER_BYTES} bytes."
                response = JSONResponse({"error": message}, status_code=431, headers={"X-Error-Message": message})
                await response(scope, receive, send)
                return
            if scope.get("raw_path"):
                raw = scope["raw_path"].split(b"?", 1)[0].decode("latin-1")
                scope = dict(scope, path=raw)
        await self.app(scope, receive, send)
