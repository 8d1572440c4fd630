"""What every page route shares: the Jinja2 environment, the per-app page state (sessions, summary cache),
the signed-in viewer, and rendering with the pages' security headers (hub errors become HTML pages).

Every HTML response carries a strict Content-Security-Policy: no inline script or style, images only from
this hub (and ``data:`` thumbnails).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from hubtools.localhub.context import HubContext
from hubtools.localhub.errors import HubHTTPError, RepoMoved
from hubtools.localhub.pages.formatting import as_list, file_url, human_size, repo_path
from hubtools.localhub.sessions import Session
from hubtools.localhub.pages.summaries import SummaryCache

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(repo_path=repo_path, file_url=file_url, quote=quote, human_size=human_size, as_list=as_list)
    env.filters["day"] = lambda iso: (iso or "")[:10]
    return env


class PageState:
    """What the pages keep besides the hub's storage: sessions and the summary cache (per app)."""

    def __init__(self, hub: HubContext) -> None:
        self.sessions = hub.sessions  # shared with the downloads, which the pages' images and links use
        self.summaries = SummaryCache(hub.storage)
        # Read every card once in the background, so that tag filters and the tag list are quick and whole.
        threading.Thread(target=self.summaries.warm, args=(hub.storage.list_repos(),),
                         name="hubtools-pages-warm", daemon=True).start()


_state_lock = threading.Lock()


def page_state(request: Request) -> PageState:
    state = getattr(request.app.state, "pages", None)
    if state is None:
        with _state_lock:
            state = getattr(request.app.state, "pages", None)
            if state is None:
                state = request.app.state.pages = PageState(request.app.state.hub)
    return state


def hub_of(request: Request) -> HubContext:
    return request.app.state.hub


def session_of(request: Request) -> Session | None:
    return page_state(request).sessions.current(request, hub_of(request).tokens)


def viewer(request: Request) -> str | None:
    session = session_of(request)
    return session.user if session else None


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates().get_template(template).render(request=request, session=session_of(request), **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(request: Request, error: HubHTTPError) -> HTMLResponse:
    status = 404 if error.status in (400, 404) else error.status
    title = "Not found" if status == 404 else "Something is wrong"
    # The API's message for a missing repo already words private and missing alike; keep it.
    return render(request, "error.html.j2", status=status, title=title, message=error.message)


async def page(request: Request, build: Any, *args: Any) -> Response:
    """Run ``build`` off the event loop (it reads SQLite and blobs); hub errors become HTML pages."""
    try:
        return await run_in_threadpool(build, request, *args)
    except RepoMoved:
        raise  # the app redirects to the same page under the repo's new name, as for the API
    except HubHTTPError as error:
        return error_page(request, error)


def wants_html(request: Request) -> bool:
    """A browser asking for a page (the API's clients never accept ``text/html``): it gets an HTML error."""
    return (request.method in ("GET", "HEAD") and not request.url.path.startswith("/api/")
            and "text/html" in request.headers.get("accept", ""))


def not_found_page(request: Request) -> HTMLResponse:
    return render(request, "error.html.j2", status=404, title="Not found", message="There is no page here.")
