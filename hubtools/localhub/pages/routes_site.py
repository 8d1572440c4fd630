"""The site's own pages: static files, the index, the hackathon leaderboard, sign-in and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hubtools.localhub import naming
from hubtools.localhub.context import base_url
from hubtools.localhub.pages import leaderboard, listing
from hubtools.localhub.pages.markdown import pygments_css
from hubtools.localhub.pages.render import HERE, hub_of, page, page_state, render, session_of, viewer
from hubtools.localhub.sessions import COOKIE, clear_cookie, csrf_ok, set_cookie

STATIC_FILES = {"style.css": "text/css", "copy.js": "text/javascript", "favicon.svg": "image/svg+xml"}
TYPE_TABS = (("model", "Models"), ("dataset", "Datasets"), ("space", "Spaces"))

router = APIRouter()


# ---- static files ------------------------------------------------------------------------------


@router.get("/static/hubtools/{name}")
def static_file(name: str) -> Response:
    if name == "pygments.css":
        return Response(pygments_css(), media_type="text/css", headers={"Cache-Control": "max-age=3600"})
    if name not in STATIC_FILES:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/favicon.ico")
def favicon() -> Response:
    return static_file("favicon.svg")


@router.get("/models")
@router.get("/datasets")
@router.get("/spaces")
def listing_redirect(request: Request) -> Response:
    """The Hub's list pages are the index filtered by type here."""
    return RedirectResponse(f"/?type={request.url.path.strip('/')[:-1]}", status_code=308)


# ---- the index ---------------------------------------------------------------------------------


def _index(request: Request) -> HTMLResponse:
    hub, state = hub_of(request), page_state(request)
    params = request.query_params
    repo_type = params.get("type", "model")
    if repo_type not in naming.REPO_TYPES:
        repo_type = "model"
    sort = params.get("sort", "likes")
    sort = sort if sort in listing.SORTS else "likes"
    try:
        page_number = int(params.get("p", "1"))
    except ValueError:
        page_number = 1
    user = viewer(request)
    repos = [repo for repo in hub.storage.list_repos(repo_type) if hub.may_read(user, repo)]
    shown = listing.index_page(state.summaries, repos, search=params.get("search", "").strip(),
                               tag=params.get("tag", "").strip(), sort=sort, page=page_number)
    return render(request, "index.html.j2", page=shown, repo_type=repo_type, type_tabs=TYPE_TABS, sort=sort,
                  sorts=listing.SORTS, search=params.get("search", ""), tag=params.get("tag", ""))


@router.get("/")
async def index(request: Request) -> Response:
    return await page(request, _index)


# ---- the hackathon -----------------------------------------------------------------------------


def _hackathon(request: Request) -> HTMLResponse:
    hub, state = hub_of(request), page_state(request)
    user = viewer(request)
    repos = [repo for repo in hub.storage.list_repos("model") if hub.may_read(user, repo)]
    boards = leaderboard.hackathon_boards(hub.storage, state.summaries, repos)
    return render(request, "hackathon.html.j2", boards=boards)


@router.get("/hackathon")
async def hackathon(request: Request) -> Response:
    return await page(request, _hackathon)


@router.get("/leaderboard")
def leaderboard_redirect() -> Response:
    return RedirectResponse("/hackathon", status_code=308)


# ---- sign-in -----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    # only a path on this hub: never "//evil.example" or "https://..."
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login")
def login_form(request: Request) -> Response:
    return render(request, "login.html.j2", next=_safe_next(request.query_params.get("next")), failed=False)


def _from_this_hub(request: Request) -> bool:
    """Whether a form was sent from this hub's own pages: browsers say where a POST comes from (``Origin``,
    ``Sec-Fetch-Site``); a script without either is not a browser that could be tricked."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == base_url(request)
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


@router.post("/login")
async def login(request: Request) -> Response:
    if not _from_this_hub(request):  # login CSRF: another site signing a visitor in as someone else
        return render(request, "error.html.j2", status=403, title="Refused",
                      message="Sign in from this hub's own sign-in page.")
    form = await request.form()
    token, target = str(form.get("token", "")), _safe_next(str(form.get("next", "")))
    signed = page_state(request).sessions.sign_in(hub_of(request).tokens, token)
    if signed is None:
        return render(request, "login.html.j2", status=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request, signed[0])
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    if csrf_ok(session_of(request), form.get("csrf")):
        page_state(request).sessions.sign_out(request.cookies.get(COOKIE))
    response = RedirectResponse("/", status_code=303)
    clear_cookie(response)
    return response
