"""The HTML pages of the local hub, on the same port as the API: the index, repo pages (card, files,
commits), the dataset viewer, the hackathon leaderboard and the token sign-in.

Every repo page goes through ``HubContext.repo_visible_to`` (the API's own rule, ``may_read``), so a private
repo answers 404 to anybody who may not read it, exactly as the API does. Every HTML response carries a
strict Content-Security-Policy: no inline script or style, images only from this hub (and ``data:``
thumbnails).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import HubContext, base_url
from hubtools.localhub.errors import EntryNotFound, HubHTTPError, RepoMoved
from hubtools.localhub.pages import views
from hubtools.localhub.pages.likes import likes_it, toggle_like
from hubtools.localhub.pages.markdown import highlight_code, pygments_css, render_card
from hubtools.localhub.pages.session import COOKIE, SessionBook, clear_cookie, csrf_ok, identity_of, set_cookie
from hubtools.localhub.storage import DEFAULT_BRANCH, Repo

HERE = Path(__file__).parent
STATIC_FILES = {"style.css": "text/css", "copy.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MAX_COMMITS_SHOWN = 200
TYPE_TABS = (("model", "Models"), ("dataset", "Datasets"), ("space", "Spaces"))

router = APIRouter()


@lru_cache(maxsize=1)
def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(repo_path=views.repo_path, file_url=views.file_url, quote=quote,
                       human_size=views.human_size, as_list=views.as_list)
    env.filters["day"] = lambda iso: (iso or "")[:10]
    return env


class PageState:
    """What the pages keep besides the hub's storage: sessions and the summary cache (per app)."""

    def __init__(self, hub: HubContext) -> None:
        self.sessions = SessionBook()
        self.summaries = views.SummaryCache(hub.storage)
        # Read every card once in the background, so that tag filters and the tag list are quick and whole.
        threading.Thread(target=self.summaries.warm, args=(hub.storage.list_repos(),),
                         name="hubtools-pages-warm", daemon=True).start()


_state_lock = threading.Lock()


def _state(request: Request) -> PageState:
    state = getattr(request.app.state, "pages", None)
    if state is None:
        with _state_lock:
            state = getattr(request.app.state, "pages", None)
            if state is None:
                state = request.app.state.pages = PageState(request.app.state.hub)
    return state


def _hub(request: Request) -> HubContext:
    return request.app.state.hub


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    state = _state(request)
    session = state.sessions.current(request, _hub(request).tokens)
    html = _templates().get_template(template).render(request=request, session=session, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _error(request: Request, error: HubHTTPError) -> HTMLResponse:
    status = 404 if error.status in (400, 404) else error.status
    title = "Not found" if status == 404 else "Something is wrong"
    # The API's message for a missing repo already words private and missing alike; keep it.
    return _render(request, "error.html.j2", status=status, title=title, message=error.message)


async def _page(request: Request, build: Any, *args: Any) -> Response:
    """Run ``build`` off the event loop (it reads SQLite and blobs); hub errors become HTML pages."""
    try:
        return await run_in_threadpool(build, request, *args)
    except RepoMoved:
        raise  # the app redirects to the same page under the repo's new name, as for the API
    except HubHTTPError as error:
        return _error(request, error)


def _viewer(request: Request) -> str | None:
    session = _state(request).sessions.current(request, _hub(request).tokens)
    return session.user if session else None


# ---- static files ------------------------------------------------------------------------------


@router.get("/static/hubtools/{name}")
def static_file(name: str) -> Response:
    if name == "pygments.css":
        return Response(pygments_css(), media_type="text/css", headers={"Cache-Control": "max-age=3600"})
    if name not in STATIC_FILES:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


# ---- the index ---------------------------------------------------------------------------------


def _index(request: Request) -> HTMLResponse:
    hub, state = _hub(request), _state(request)
    params = request.query_params
    repo_type = params.get("type", "model")
    if repo_type not in naming.REPO_TYPES:
        repo_type = "model"
    sort = params.get("sort", "likes")
    sort = sort if sort in views.SORTS else "likes"
    try:
        page_number = int(params.get("p", "1"))
    except ValueError:
        page_number = 1
    user = _viewer(request)
    repos = [repo for repo in hub.storage.list_repos(repo_type) if hub.may_read(user, repo)]
    page = views.index_page(state.summaries, repos, search=params.get("search", "").strip(),
                            tag=params.get("tag", "").strip(), sort=sort, page=page_number)
    return _render(request, "index.html.j2", page=page, repo_type=repo_type, type_tabs=TYPE_TABS, sort=sort,
                   sorts=views.SORTS, search=params.get("search", ""), tag=params.get("tag", ""))


@router.get("/")
async def index(request: Request) -> Response:
    return await _page(request, _index)


# ---- repo pages --------------------------------------------------------------------------------


def _repo_context(request: Request, repo_type: str, namespace: str, name: str, revision: str
                  ) -> tuple[Repo, Any, dict[str, Any]]:
    hub = _hub(request)
    user = _viewer(request)
    repo = hub.repo_visible_to(user, repo_type, namespace, name)
    commit, _ = hub.resolve(repo, revision)
    summary = _state(request).summaries.summary(repo, commit.oid)
    refs = hub.storage.list_refs(repo.repo_type, repo.repo_id)
    context = {
        "repo": repo,
        "liked": likes_it(hub, user, repo),
        "summary": summary,
        "commit": commit,
        "revision": unquote(revision),
        "branches": [r for r in refs if r.kind == "branch"],
        "tags": [r for r in refs if r.kind == "tag"],
        "prs": [r for r in refs if r.kind == "pr"],
    }
    return repo, commit, context


def _repo_page(request: Request, repo_type: str, namespace: str, name: str) -> HTMLResponse:
    repo, commit, context = _repo_context(request, repo_type, namespace, name, DEFAULT_BRANCH)
    summary = context["summary"]
    card_html = None
    if summary.readme is not None:
        card_html = render_card(summary.readme, repo_path=views.repo_path(repo), revision=DEFAULT_BRANCH)
    language, code = views.usage_snippet(summary, base_url(request))
    rows = views.dataset_rows(_hub(request).storage, repo, commit, DEFAULT_BRANCH) if repo_type == "dataset" else None
    card = summary.card or {}
    return _render(request, "repo.html.j2", tab="card", card_html=card_html, snippet=code,
                   snippet_html=highlight_code(code, language), eval_rows=views.eval_rows(card),
                   licence=", ".join(views.as_list(card.get("license"))), base_models=views.as_list(card.get("base_model")),
                   rows=rows, **context)


def _tree_page(request: Request, repo_type: str, namespace: str, name: str, revision: str,
               path: str = "") -> HTMLResponse:
    repo, commit, context = _repo_context(request, repo_type, namespace, name, revision)
    folder = unquote(path).strip("/")
    if folder:
        naming.check_path(folder)
    items = views.tree_items(commit, folder)
    if items is None:
        raise EntryNotFound(f"{folder} does not exist at revision {context['revision']}.")
    return _render(request, "tree.html.j2", tab="files", folder=folder, items=items,
                   crumbs=views.breadcrumbs(folder), total_size=commit.tree.total_size(), **context)


def _blob_page(request: Request, repo_type: str, namespace: str, name: str, revision: str,
               path: str) -> HTMLResponse:
    repo, commit, context = _repo_context(request, repo_type, namespace, name, revision)
    file_path = naming.check_path(unquote(path))
    entry = commit.tree.get(file_path)
    if entry is None:
        raise EntryNotFound(f"{file_path} does not exist at revision {context['revision']}.")
    preview_html, preview_text, is_image = None, None, file_path.lower().endswith(views.IMAGE_SUFFIXES)
    if not is_image and entry.size <= views.MAX_PREVIEW_BYTES:
        data = _hub(request).storage.blobs.read_blob(entry.sha256)
        if b"\0" not in data[:8000]:
            preview_text = data.decode("utf-8", "replace")
            preview_html = highlight_code(preview_text, filename=file_path.rsplit("/", 1)[-1])
    return _render(request, "blob.html.j2", tab="files", path=file_path, entry=entry, is_image=is_image,
                   preview_html=preview_html, preview_text=preview_text,
                   crumbs=views.breadcrumbs(file_path), **context)


def _commits_page(request: Request, repo_type: str, namespace: str, name: str, revision: str) -> HTMLResponse:
    repo, commit, context = _repo_context(request, repo_type, namespace, name, revision)
    history = _hub(request).storage.history(repo.repo_type, repo.repo_id, commit, limit=MAX_COMMITS_SHOWN + 1)
    return _render(request, "commits.html.j2", tab="commits", history=history[:MAX_COMMITS_SHOWN],
                   more=len(history) > MAX_COMMITS_SHOWN, **context)


def _like(request: Request, repo_type: str, namespace: str, name: str, form: dict) -> Response:
    hub, state = _hub(request), _state(request)
    session = state.sessions.current(request, hub.tokens)
    repo = hub.repo_visible_to(session.user if session else None, repo_type, namespace, name)
    if session is None:
        return RedirectResponse(f"/login?next={quote(views.repo_path(repo))}", status_code=303)
    if not csrf_ok(session, form.get("csrf")):
        return _render(request, "error.html.j2", status=403, title="Refused",
                       message="This form has expired: reload the page and try again.")
    identity = identity_of(hub.tokens, session)
    if identity is None:
        return RedirectResponse(f"/login?next={quote(views.repo_path(repo))}", status_code=303)
    identity.check_may_act()  # a read token may look, not like (403, as the API answers it)
    toggle_like(hub, session.user, repo)
    return RedirectResponse(views.repo_path(repo), status_code=303)


def _add_repo_routes(prefix: str, repo_type: str) -> None:
    async def repo_page(request: Request, namespace: str, name: str) -> Response:
        return await _page(request, _repo_page, repo_type, namespace, name)

    async def tree_root(request: Request, namespace: str, name: str, revision: str) -> Response:
        return await _page(request, _tree_page, repo_type, namespace, name, revision)

    async def tree_path(request: Request, namespace: str, name: str, revision: str, path: str) -> Response:
        return await _page(request, _tree_page, repo_type, namespace, name, revision, path)

    async def blob(request: Request, namespace: str, name: str, revision: str, path: str) -> Response:
        return await _page(request, _blob_page, repo_type, namespace, name, revision, path)

    async def commits(request: Request, namespace: str, name: str, revision: str) -> Response:
        return await _page(request, _commits_page, repo_type, namespace, name, revision)

    async def like(request: Request, namespace: str, name: str) -> Response:
        form = dict(await request.form())
        return await _page(request, _like, repo_type, namespace, name, form)

    base = f"{prefix}/{{namespace}}/{{name}}"
    router.add_api_route(base, repo_page, methods=["GET"], name=f"{repo_type}_page")
    router.add_api_route(f"{base}/tree/{{revision}}", tree_root, methods=["GET"], name=f"{repo_type}_tree_root")
    router.add_api_route(f"{base}/tree/{{revision}}/{{path:path}}", tree_path, methods=["GET"], name=f"{repo_type}_tree")
    router.add_api_route(f"{base}/blob/{{revision}}/{{path:path}}", blob, methods=["GET"], name=f"{repo_type}_blob")
    router.add_api_route(f"{base}/commits/{{revision}}", commits, methods=["GET"], name=f"{repo_type}_commits")
    router.add_api_route(f"{base}/like", like, methods=["POST"], name=f"{repo_type}_like")


# ---- the hackathon -----------------------------------------------------------------------------


def _hackathon(request: Request) -> HTMLResponse:
    hub, state = _hub(request), _state(request)
    user = _viewer(request)
    repos = [repo for repo in hub.storage.list_repos("model") if hub.may_read(user, repo)]
    boards = views.hackathon_boards(hub.storage, state.summaries, repos)
    return _render(request, "hackathon.html.j2", boards=boards)


@router.get("/hackathon")
async def hackathon(request: Request) -> Response:
    return await _page(request, _hackathon)


@router.get("/leaderboard")
def leaderboard() -> Response:
    return RedirectResponse("/hackathon", status_code=308)


# ---- sign-in -----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    # only a path on this hub: never "//evil.example" or "https://..."
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login")
def login_form(request: Request) -> Response:
    return _render(request, "login.html.j2", next=_safe_next(request.query_params.get("next")), failed=False)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    token, target = str(form.get("token", "")), _safe_next(str(form.get("next", "")))
    signed = _state(request).sessions.sign_in(_hub(request).tokens, token)
    if signed is None:
        return _render(request, "login.html.j2", status=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request, signed[0])
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    state = _state(request)
    if csrf_ok(state.sessions.current(request, _hub(request).tokens), form.get("csrf")):
        state.sessions.sign_out(request.cookies.get(COOKIE))
    response = RedirectResponse("/", status_code=303)
    clear_cookie(response)
    return response


for _prefix, _repo_type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):
    _add_repo_routes(_prefix, _repo_type)
