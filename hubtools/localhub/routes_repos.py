"""Repo routes: create, delete, change visibility, and list (search, filter, sort) repos of a type."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, base_url, error_response, json_object
from hubtools.localhub.errors import BadRequest, HubHTTPError
from hubtools.localhub.storage import DEFAULT_BRANCH

router = APIRouter()


def repo_id_from_body(body: dict, user: str) -> tuple[str, str]:
    repo_type = naming.check_repo_type(body.get("type"))
    name = body.get("name")
    namespace = body.get("organization") or user
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise BadRequest("The body needs a string 'name' (and optionally 'organization').")
    return repo_type, naming.check_repo_id(namespace, name)


@router.post("/api/repos/create")
async def create_repo(request: Request, hub: Hub) -> Response:
    user = hub.tokens.require_user(request.headers.get("authorization"))
    body = json_object(await hub.read_json(request))
    repo_type, repo_id = repo_id_from_body(body, user)
    hub.require_writer(request, repo_id.split("/")[0])
    private = body.get("private")
    if body.get("visibility") is not None:
        private = body["visibility"] in ("private", "protected")
    url = f"{base_url(request)}/{naming.URL_PREFIXES[repo_type]}{repo_id}"
    existing = hub.storage.get_repo(repo_type, repo_id)
    if existing is not None:
        return error_response(409, f"You already created this {repo_type} repo", extra={"url": url})
    await run_in_threadpool(hub.storage.create_repo, repo_type, repo_id, user, bool(private))
    return JSONResponse({"url": url, "name": repo_id, "id": repo_id})


@router.delete("/api/repos/delete")
async def delete_repo(request: Request, hub: Hub) -> Response:
    user = hub.tokens.require_user(request.headers.get("authorization"))
    body = json_object(await hub.read_json(request))
    repo_type, repo_id = repo_id_from_body(body, user)
    namespace, name = repo_id.split("/")
    hub.writable_repo(request, repo_type, namespace, name)
    await run_in_threadpool(hub.storage.delete_repo, repo_type, repo_id)
    return JSONResponse({})


@router.put("/api/{plural}/{namespace}/{name}/settings")
async def repo_settings(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    repo, _ = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    body = json_object(await hub.read_json(request))
    private = body.get("private")
    if body.get("visibility") is not None:
        if body["visibility"] not in ("private", "public", "protected"):
            raise BadRequest("visibility must be 'private' or 'public'.")
        private = body["visibility"] != "public"
    if private is not None:
        if not isinstance(private, bool):
            raise BadRequest("'private' must be true or false.")
        await run_in_threadpool(hub.storage.set_private, repo.repo_type, repo.repo_id, private)
    return JSONResponse({})


SORT_KEYS = {
    "likes": "likes",
    "downloads": "downloads",
    "lastModified": "lastModified",
    "last_modified": "lastModified",
    "createdAt": "createdAt",
    "created_at": "createdAt",
    "trendingScore": "likes",
}


@router.get("/api/{plural}")
def list_repos(request: Request, plural: str, hub: Hub) -> Response:
    repo_type = naming.repo_type_from_plural(plural)
    user = hub.viewer(request)
    params = request.query_params
    searches = [s.lower() for s in params.getlist("search") if s]
    author = params.get("author")
    filters = [f for value in params.getlist("filter") for f in value.split(",") if f]
    sort = params.get("sort")
    try:
        limit = int(params["limit"]) if params.get("limit") else None
    except ValueError:
        raise BadRequest("limit must be an integer.") from None
    items = []
    for repo in hub.storage.list_repos(repo_type):
        if not hub.may_read(user, repo):
            continue
        if author and repo.repo_id.split("/")[0] != author:
            continue
        if searches and not all(s in repo.repo_id.lower() for s in searches):
            continue
        try:
            commit, _ = hub.storage.resolve(repo.repo_type, repo.repo_id, DEFAULT_BRANCH)
        except HubHTTPError:
            continue
        item = hub.repo_json(request, repo, commit)
        if filters and not all(f in item["tags"] or f == item.get("library_name") for f in filters):
            continue
        items.append(item)
    if sort:
        if sort not in SORT_KEYS:
            raise BadRequest(f"Unknown sort {sort!r}: use likes, downloads, lastModified or createdAt.")
        key = SORT_KEYS[sort]
        ascending = params.get("direction") == "1"
        items.sort(key=lambda item: (item[key], item["id"]), reverse=not ascending)
    else:
        items.sort(key=lambda item: item["id"])
    if limit is not None:
        items = items[: max(limit, 0)]
    return JSONResponse(items)
