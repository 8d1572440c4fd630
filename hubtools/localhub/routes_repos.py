"""Repo routes: create, delete, move, duplicate, settings (visibility, gating), super-squash, access
checks, the Space runtime, and listings (search, filter, sort; a user's own repos with their storage)."""

from __future__ import annotations

from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, base_url, error_response, flag, json_object
from hubtools.localhub.errors import BadRequest, Forbidden, HubHTTPError, NotFound
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
    sdk = body.get("sdk") if repo_type == "space" else None
    if sdk is not None and not isinstance(sdk, str):
        raise BadRequest("'sdk' must be a string such as gradio, docker or static.")
    await run_in_threadpool(lambda: hub.storage.create_repo(repo_type, repo_id, user, bool(private), sdk=sdk))
    return JSONResponse({"url": url, "name": repo_id, "id": repo_id})


@router.post("/api/repos/move")
async def move_repo(request: Request, hub: Hub) -> Response:
    hub.require_actor(request)
    body = json_object(await hub.read_json(request))
    repo_type = naming.check_repo_type(body.get("type") or "model")
    from_id, to_id = body.get("fromRepo"), body.get("toRepo")
    if not isinstance(from_id, str) or not isinstance(to_id, str) or from_id.count("/") != 1 or to_id.count("/") != 1:
        raise BadRequest("Moving a repo needs 'fromRepo' and 'toRepo' as namespace/name.")
    repo = hub.visible_repo(request, repo_type, *from_id.split("/"))
    new_id = naming.check_repo_id(*to_id.split("/"))
    hub.require_writer(request, repo.namespace)
    hub.require_writer(request, new_id.split("/")[0])
    await run_in_threadpool(hub.storage.move_repo, repo_type, repo.repo_id, new_id)
    return JSONResponse({"url": f"{base_url(request)}/{naming.URL_PREFIXES[repo_type]}{new_id}"})


@router.post("/api/{plural}/{namespace}/{name}/duplicate")
async def duplicate_repo(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    user = hub.require_actor(request)
    source = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    body = json_object(await hub.read_json(request))
    target = body.get("repository")
    if not isinstance(target, str) or target.count("/") != 1:
        raise BadRequest("Duplicating a repo needs 'repository' as namespace/name.")
    new_id = naming.check_repo_id(*target.split("/"))
    hub.require_writer(request, new_id.split("/")[0])
    visibility = body.get("visibility")
    private = source.private if visibility is None else visibility in ("private", "protected")
    url = f"{base_url(request)}/{naming.URL_PREFIXES[source.repo_type]}{new_id}"
    if hub.storage.get_repo(source.repo_type, new_id) is not None:
        return error_response(409, f"You already created this {source.repo_type} repo", extra={"url": url})
    await run_in_threadpool(hub.storage.copy_repo, source.repo_type, source.repo_id, new_id, user, private)
    return JSONResponse({"url": url, "filesCopyPending": False})


@router.post("/api/{plural}/{namespace}/{name}/super-squash/{branch}")
async def super_squash(request: Request, plural: str, namespace: str, name: str, branch: str, hub: Hub) -> Response:
    repo, user = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    body = json_object(await hub.read_json(request))
    message = body.get("message") or f"Super-squash branch '{unquote(branch)}'"
    if not isinstance(message, str):
        raise BadRequest("'message' must be a string.")
    oid = await run_in_threadpool(lambda: hub.storage.squash(repo.repo_type, repo.repo_id, unquote(branch),
                                                            title=message, author=user))
    return JSONResponse({"commitId": oid})


@router.get("/api/{plural}/{namespace}/{name}/auth-check")
def auth_check(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    return JSONResponse({})


@router.get("/api/{plural}/{namespace}/{name}/auth-check/write")
def auth_check_write(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    return JSONResponse({})


@router.get("/api/spaces/{namespace}/{name}/runtime")
def space_runtime(request: Request, namespace: str, name: str, hub: Hub) -> Response:
    """Spaces are stored, never run here: the runtime says so, in the Hub's shape."""
    repo = hub.visible_repo(request, "space", namespace, name)
    return JSONResponse({"stage": "NO_APP_FILE" if repo.sdk is None else "STOPPED",
                         "hardware": {"current": None, "requested": None}, "storage": None,
                         "gcTimeout": None, "replicas": {"current": 0, "requested": 0},
                         "sdk": repo.sdk, "errorMessage": "Spaces are not run by the hubtools local hub."})


def _repos_with_storage(hub: Hub, namespace: str) -> list[dict]:
    items = []
    for repo in hub.storage.list_repos():
        if repo.namespace != namespace:
            continue
        try:
            commit, _ = hub.storage.resolve(repo.repo_type, repo.repo_id, DEFAULT_BRANCH)
        except HubHTTPError:
            continue
        items.append({"id": repo.repo_id, "type": repo.repo_type, "updatedAt": commit.date,
                      "visibility": "private" if repo.private else "public",
                      "storage": commit.tree.total_size(), "storagePercent": 0})
    return items


@router.get("/api/settings/repositories")
def my_repositories(request: Request, hub: Hub) -> Response:
    user = hub.tokens.require_user(request.headers.get("authorization"))
    return JSONResponse(_repos_with_storage(hub, user))


@router.get("/api/organizations/{organization}/settings/repositories")
def organization_repositories(request: Request, organization: str, hub: Hub) -> Response:
    user = hub.tokens.require_user(request.headers.get("authorization"))
    if organization not in hub.organizations:
        raise NotFound(f"Organization {organization} not found.")
    if not hub.may_write(user, organization):
        raise Forbidden(f"You are not a member of {organization}.")
    return JSONResponse(_repos_with_storage(hub, organization))


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
    changes: dict[str, object] = {}
    if private is not None:
        if not isinstance(private, bool):
            raise BadRequest("'private' must be true or false.")
        changes["private"] = private
    if "gated" in body:
        gated = body["gated"]
        if gated not in (False, "auto", "manual"):
            raise BadRequest("'gated' must be false, 'auto' or 'manual'.")
        changes["gated"] = gated or None
    if changes:
        await run_in_threadpool(lambda: hub.storage.update_repo(repo.repo_type, repo.repo_id, **changes))
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
    pipeline_tag, library = params.get("pipeline_tag"), params.get("library")
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
        if pipeline_tag and item.get("pipeline_tag") != pipeline_tag:
            continue
        if library and item.get("library_name") != library and library not in item["tags"]:
            continue
        if params.get("gated") is not None and bool(item["gated"]) != flag(params["gated"]):
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
