"""A repo's pages: its card, ``tree/``, ``blob/``, ``commits/`` and the like button.

Every repo page goes through ``HubContext.repo_visible_to`` (the API's own rule, ``may_read``), so a private
repo answers 404 to anybody who may not read it, exactly as the API does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hubtools.localhub import naming
from hubtools.localhub.context import UNGATED_FILES, base_url
from hubtools.localhub.errors import EntryNotFound
from hubtools.localhub.pages import dataset_viewer, repo_view
from hubtools.localhub.pages.formatting import as_list, repo_links, repo_path
from hubtools.localhub.pages.likes import likes_it, toggle_like
from hubtools.localhub.pages.markdown import highlight_code, render_card
from hubtools.localhub.pages.render import hub_of, page, page_state, render, session_of, viewer
from hubtools.localhub.sessions import csrf_ok, identity_of
from hubtools.localhub.pages.summaries import IMAGE_SUFFIXES
from hubtools.localhub.storage import DEFAULT_BRANCH, Repo

MAX_COMMITS_SHOWN = 200

router = APIRouter()


def repo_context(request: Request, repo_type: str, namespace: str, name: str, revision: str
                 ) -> tuple[Repo, Any, dict[str, Any]]:
    """The repo (404 unless the viewer may read it), the commit at ``revision`` and what the repo header
    shows; every repo page starts here."""
    hub = hub_of(request)
    user = viewer(request)
    repo = hub.repo_visible_to(user, repo_type, namespace, name)
    commit, _ = hub.resolve(repo, revision)
    summary = page_state(request).summaries.summary(repo, commit.oid)
    refs = hub.storage.list_refs(repo.repo_type, repo.repo_id)
    context = {
        "repo": repo,
        "gate": gate_state(hub, user, repo),
        "liked": likes_it(hub, user, repo),
        "summary": summary,
        "commit": commit,
        "revision": unquote(revision),
        "branches": [r for r in refs if r.kind == "branch"],
        "tags": [r for r in refs if r.kind == "tag"],
        "prs": [r for r in refs if r.kind == "pr"],
    }
    return repo, commit, context


def gate_state(hub: Any, user: str | None, repo: Repo) -> str | None:
    """What the header says of a gated repo to this viewer: None (not gated, or theirs), "ask" (the
    "Request access" button), or the status of their request ("pending", "accepted", "rejected")."""
    if not repo.gated or hub.may_write(user, repo.namespace):
        return None
    asked = hub.storage.access.get(repo.repo_type, repo.repo_id, user) if user else None
    return asked.status if asked else "ask"


def _repo_page(request: Request, repo_type: str, namespace: str, name: str) -> HTMLResponse:
    repo, commit, context = repo_context(request, repo_type, namespace, name, DEFAULT_BRANCH)
    summary = context["summary"]
    card_html = None
    if summary.readme is not None:
        card_html = render_card(summary.readme, repo_path=repo_path(repo), revision=DEFAULT_BRANCH)
    language, code = repo_view.usage_snippet(summary, base_url(request))
    readable = hub_of(request).may_download(viewer(request), repo)  # a gated dataset's rows wait for access
    rows = dataset_viewer.dataset_rows(hub_of(request).storage, repo, commit, DEFAULT_BRANCH) if (
        repo_type == "dataset" and readable) else None
    card = summary.card or {}
    return render(request, "repo.html.j2", tab="card", card_html=card_html, snippet=code,
                  snippet_html=highlight_code(code, language), eval_rows=repo_view.eval_rows(card),
                  licence=", ".join(as_list(card.get("license"))), base_models=repo_links(card.get("base_model"), "model"),
                  datasets=repo_links(card.get("datasets"), "dataset"),
                  rows=rows, **context)


def _tree_page(request: Request, repo_type: str, namespace: str, name: str, revision: str,
               path: str = "") -> HTMLResponse:
    repo, commit, context = repo_context(request, repo_type, namespace, name, revision)
    folder = unquote(path).strip("/")
    if folder:
        naming.check_path(folder)
    items = repo_view.tree_items(commit, folder)
    if items is None:
        raise EntryNotFound(f"{folder} does not exist at revision {context['revision']}.")
    return render(request, "tree.html.j2", tab="files", folder=folder, items=items,
                  crumbs=repo_view.breadcrumbs(folder), total_size=commit.tree.total_size(), **context)


def _blob_page(request: Request, repo_type: str, namespace: str, name: str, revision: str,
               path: str) -> HTMLResponse:
    repo, commit, context = repo_context(request, repo_type, namespace, name, revision)
    file_path = naming.check_path(unquote(path))
    entry = commit.tree.get(file_path)
    if entry is None:
        raise EntryNotFound(f"{file_path} does not exist at revision {context['revision']}.")
    preview_html, preview_text, is_image = None, None, file_path.lower().endswith(IMAGE_SUFFIXES)
    readable = file_path in UNGATED_FILES or hub_of(request).may_download(viewer(request), repo)
    if readable and not is_image and entry.size <= repo_view.MAX_PREVIEW_BYTES:
        data = hub_of(request).storage.blobs.read_blob(entry.sha256)
        if b"\0" not in data[:8000]:
            preview_text = data.decode("utf-8", "replace")
            preview_html = highlight_code(preview_text, filename=file_path.rsplit("/", 1)[-1])
    return render(request, "blob.html.j2", tab="files", path=file_path, entry=entry, is_image=is_image,
                  preview_html=preview_html, preview_text=preview_text,
                  crumbs=repo_view.breadcrumbs(file_path), **context)


def _commits_page(request: Request, repo_type: str, namespace: str, name: str, revision: str) -> HTMLResponse:
    repo, commit, context = repo_context(request, repo_type, namespace, name, revision)
    history = hub_of(request).storage.history(repo.repo_type, repo.repo_id, commit, limit=MAX_COMMITS_SHOWN + 1)
    return render(request, "commits.html.j2", tab="commits", history=history[:MAX_COMMITS_SHOWN],
                  more=len(history) > MAX_COMMITS_SHOWN, **context)


def _like(request: Request, repo_type: str, namespace: str, name: str, form: dict) -> Response:
    hub = hub_of(request)
    session = session_of(request)
    repo = hub.repo_visible_to(session.user if session else None, repo_type, namespace, name)
    if session is None:
        return RedirectResponse(f"/login?next={quote(repo_path(repo))}", status_code=303)
    if not csrf_ok(session, form.get("csrf")):
        return render(request, "error.html.j2", status=403, title="Refused",
                      message="This form has expired: reload the page and try again.")
    identity = identity_of(hub.tokens, session)
    if identity is None:
        return RedirectResponse(f"/login?next={quote(repo_path(repo))}", status_code=303)
    identity.check_may_write(repo.namespace)  # a read or narrowed token may look, not like (403, as the API)
    toggle_like(hub, session.user, repo)
    return RedirectResponse(repo_path(repo), status_code=303)


def _ask_access(request: Request, repo_type: str, namespace: str, name: str, form: dict) -> Response:
    """The "Request access" button of a gated repo (the Hub's ``ask-access`` form): a pending request, or
    an accepted one at once for ``gated="auto"``."""
    hub = hub_of(request)
    session = session_of(request)
    repo = hub.repo_visible_to(session.user if session else None, repo_type, namespace, name)
    identity = identity_of(hub.tokens, session) if session else None
    if session is None or identity is None:
        return RedirectResponse(f"/login?next={quote(repo_path(repo))}", status_code=303)
    if not csrf_ok(session, form.get("csrf")):
        return render(request, "error.html.j2", status=403, title="Refused",
                      message="This form has expired: reload the page and try again.")
    identity.check_may_write(repo.namespace)  # as for a like: read and narrowed tokens only look
    if repo.gated:
        hub.storage.access.ask(repo.repo_type, repo.repo_id, session.user, auto_accept=repo.gated == "auto")
    return RedirectResponse(repo_path(repo), status_code=303)


def _add_repo_routes(prefix: str, repo_type: str) -> None:
    async def repo_page(request: Request, namespace: str, name: str) -> Response:
        return await page(request, _repo_page, repo_type, namespace, name)

    async def tree_root(request: Request, namespace: str, name: str, revision: str) -> Response:
        return await page(request, _tree_page, repo_type, namespace, name, revision)

    async def tree_path(request: Request, namespace: str, name: str, revision: str, path: str) -> Response:
        return await page(request, _tree_page, repo_type, namespace, name, revision, path)

    async def blob(request: Request, namespace: str, name: str, revision: str, path: str) -> Response:
        return await page(request, _blob_page, repo_type, namespace, name, revision, path)

    async def commits(request: Request, namespace: str, name: str, revision: str) -> Response:
        return await page(request, _commits_page, repo_type, namespace, name, revision)

    async def like(request: Request, namespace: str, name: str) -> Response:
        form = dict(await request.form())
        return await page(request, _like, repo_type, namespace, name, form)

    async def ask_access(request: Request, namespace: str, name: str) -> Response:
        form = dict(await request.form())
        return await page(request, _ask_access, repo_type, namespace, name, form)

    base = f"{prefix}/{{namespace}}/{{name}}"
    router.add_api_route(base, repo_page, methods=["GET"], name=f"{repo_type}_page")
    router.add_api_route(f"{base}/tree/{{revision}}", tree_root, methods=["GET"], name=f"{repo_type}_tree_root")
    router.add_api_route(f"{base}/tree/{{revision}}/{{path:path}}", tree_path, methods=["GET"], name=f"{repo_type}_tree")
    router.add_api_route(f"{base}/blob/{{revision}}/{{path:path}}", blob, methods=["GET"], name=f"{repo_type}_blob")
    router.add_api_route(f"{base}/commits/{{revision}}", commits, methods=["GET"], name=f"{repo_type}_commits")
    router.add_api_route(f"{base}/like", like, methods=["POST"], name=f"{repo_type}_like")
    router.add_api_route(f"{base}/ask-access", ask_access, methods=["POST"], name=f"{repo_type}_ask_access")


for _prefix, _repo_type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):
    _add_repo_routes(_prefix, _repo_type)
