"""Gated repos' access requests, the routes huggingface_hub's ``list_pending_access_requests``,
``list_accepted_access_requests``, ``list_rejected_access_requests``, ``accept_access_request``,
``reject_access_request``, ``cancel_access_request`` and ``grant_access`` call. Users ask for access on the
repo's page (``pages/routes_repo``: the "Request access" button, the Hub's ``ask-access`` form)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hubtools.localhub import naming
from hubtools.localhub.access import STATUSES
from hubtools.localhub.context import Hub, HubContext, json_object
from hubtools.localhub.errors import BadRequest, NotFound
from hubtools.localhub.storage import Repo

router = APIRouter()


def gated_repo_to_manage(hub: HubContext, request: Request, plural: str, namespace: str, name: str) -> Repo:
    """The repo, for a writer of its namespace (with a token allowed to write there); 400 unless gated."""
    repo, _ = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    if not repo.gated:
        raise BadRequest(f"{repo.repo_id} is not a gated repo: turn gating on in its settings first.")
    return repo


def _user_of(hub: HubContext, body: dict) -> str:
    user = body.get("user")
    if not isinstance(user, str):
        if "requestId" in body:
            raise BadRequest("Name the user ('user'): this hub shares requesters' names with the repo's writers.")
        raise BadRequest("The request needs the 'user' to act on.")
    return naming.check_name_part(user, "user name")


@router.get("/api/{plural}/{namespace}/{name}/user-access-request/{status}")
def list_access_requests(request: Request, plural: str, namespace: str, name: str, status: str,
                         hub: Hub) -> Response:
    if status not in STATUSES:
        raise NotFound("Not found: no such endpoint.")
    repo = gated_repo_to_manage(hub, request, plural, namespace, name)
    requests = hub.storage.access.list(repo.repo_type, repo.repo_id, status)
    return JSONResponse([{
        "user": {"user": item.user, "fullname": item.user, "type": "user"},
        "requestId": item.request_id(repo.repo_type, repo.repo_id),
        "status": item.status,
        "timestamp": item.created_at,
        "fields": item.fields,
    } for item in requests])


@router.post("/api/{plural}/{namespace}/{name}/user-access-request/handle")
async def handle_access_request(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    repo = gated_repo_to_manage(hub, request, plural, namespace, name)
    body = json_object(await hub.read_json(request))
    user, status = _user_of(hub, body), body.get("status")
    if not isinstance(status, str):
        raise BadRequest("The request needs a 'status': pending, accepted or rejected.")
    hub.storage.access.handle(repo.repo_type, repo.repo_id, user, status)
    return JSONResponse({})


@router.post("/api/{plural}/{namespace}/{name}/user-access-request/grant")
async def grant_access(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    repo = gated_repo_to_manage(hub, request, plural, namespace, name)
    user = _user_of(hub, json_object(await hub.read_json(request)))
    hub.storage.access.grant(repo.repo_type, repo.repo_id, user)
    return JSONResponse({})
