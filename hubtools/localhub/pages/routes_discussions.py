"""The Community tab: ``discussions`` (the list) and ``discussions/{num}`` (one discussion or pull
request), with the forms to comment, close or reopen, and merge. The forms carry the session's CSRF
value and are checked with the API's rules: anyone who can read a repo comments (not with a read token),
its author or a writer closes and reopens, only a writer merges."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hubtools.localhub.errors import BadRequest, Forbidden
from hubtools.localhub.pages import threads
from hubtools.localhub.pages.formatting import repo_path
from hubtools.localhub.pages.render import hub_of, page, render, session_of, viewer
from hubtools.localhub.pages.routes_repo import repo_context
from hubtools.localhub.sessions import csrf_ok, identity_of
from hubtools.localhub.storage import DEFAULT_BRANCH
from hubtools.localhub.community import comment_data

router = APIRouter()


def _number(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise BadRequest(f"Invalid discussion number {value!r}.")
    return int(value)


def _list_page(request: Request, repo_type: str, namespace: str, name: str) -> HTMLResponse:
    repo, _, context = repo_context(request, repo_type, namespace, name, DEFAULT_BRANCH)
    params = request.query_params
    kind = params.get("type", "all") if params.get("type") in dict(threads.FILTERS) else "all"
    status = params.get("status", "open") if params.get("status") in dict(threads.STATUS_FILTERS) else "open"
    items = threads.list_threads(hub_of(request), repo, kind, status)
    return render(request, "discussions.html.j2", tab="community", items=items, kind=kind, shown_status=status,
                  filters=threads.FILTERS, status_filters=threads.STATUS_FILTERS, **context)


def _thread_page(request: Request, repo_type: str, namespace: str, name: str, num: str) -> HTMLResponse:
    repo, _, context = repo_context(request, repo_type, namespace, name, DEFAULT_BRANCH)
    shown = threads.thread(hub_of(request), repo, _number(num), viewer(request))
    return render(request, "discussion.html.j2", tab="community", thread=shown, item=shown.discussion, **context)


def _act(request: Request, repo_type: str, namespace: str, name: str, num: str, action: str, form: dict) -> Response:
    hub = hub_of(request)
    session = session_of(request)
    repo = hub.repo_visible_to(session.user if session else None, repo_type, namespace, name)
    here = f"{repo_path(repo)}/discussions/{_number(num)}"
    identity = identity_of(hub.tokens, session) if session else None
    if session is None or identity is None:
        return RedirectResponse(f"/login?next={here}", status_code=303)
    if not csrf_ok(session, form.get("csrf")):
        raise Forbidden("This form has expired: reload the page and try again.")
    identity.check_may_act()  # a read token may look, not take part
    discussion = hub.storage.community.get_discussion(repo.repo_type, repo.repo_id, _number(num))
    user = session.user
    text = str(form.get("comment") or "").strip()
    if action == "comment":
        if not text:
            raise BadRequest("A comment needs some text.")
        hub.storage.community.add_discussion_event(repo.repo_type, repo.repo_id, discussion.num, "comment", user,
                                         comment_data(text))
    elif action == "status":
        status = form.get("status")
        if status not in ("open", "closed") or discussion.status == "merged":
            raise BadRequest("The status can only change to open or closed, and not after a merge.")
        if user != discussion.author and not hub.may_write(user, repo.namespace):
            raise Forbidden(f"Only the author of #{discussion.num} or a writer of {repo.repo_id} may do this.")
        if text:
            hub.storage.community.add_discussion_event(repo.repo_type, repo.repo_id, discussion.num, "comment", user,
                                             comment_data(text))
        hub.storage.community.add_discussion_event(repo.repo_type, repo.repo_id, discussion.num, "status-change", user,
                                         {"status": status}, status=status)
    elif action == "merge":
        identity.check_may_write(repo.namespace)
        hub.require_write(user, repo.namespace)
        hub.storage.merge_pull_request(repo.repo_type, repo.repo_id, discussion.num, author=user, comment=text or None)
    return RedirectResponse(here, status_code=303)


def _add_routes(prefix: str, repo_type: str) -> None:
    async def list_page(request: Request, namespace: str, name: str) -> Response:
        return await page(request, _list_page, repo_type, namespace, name)

    async def thread_page(request: Request, namespace: str, name: str, num: str) -> Response:
        return await page(request, _thread_page, repo_type, namespace, name, num)

    def action_route(action: str) -> Any:
        async def act(request: Request, namespace: str, name: str, num: str) -> Response:
            form = dict(await request.form())
            return await page(request, _act, repo_type, namespace, name, num, action, form)

        return act

    base = f"{prefix}/{{namespace}}/{{name}}/discussions"
    router.add_api_route(base, list_page, methods=["GET"], name=f"{repo_type}_discussions")
    router.add_api_route(f"{base}/{{num}}", thread_page, methods=["GET"], name=f"{repo_type}_discussion")
    for action in ("comment", "status", "merge"):
        router.add_api_route(f"{base}/{{num}}/{action}", action_route(action), methods=["POST"],
                             name=f"{repo_type}_discussion_{action}")


for _prefix, _repo_type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):
    _add_routes(_prefix, _repo_type)
