"""Likes: like and unlike a repo, who likes it, and what a user likes. A repo's like count is the number
of its likers on top of any count an admin set (``hubtools hub set-likes``), so seeded leaderboards keep
their order and real likes move it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import Hub

router = APIRouter()


async def _set_like(request: Request, plural: str, namespace: str, name: str, hub: Hub, liked: bool) -> Response:
    user = hub.require_actor(request)
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    hub.require_scope(request, repo.namespace)
    await run_in_threadpool(hub.storage.community.like, repo.repo_type, repo.repo_id, user, liked)
    return JSONResponse({})


@router.post("/api/{plural}/{namespace}/{name}/like")
async def like(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    return await _set_like(request, plural, namespace, name, hub, True)


@router.delete("/api/{plural}/{namespace}/{name}/like")
async def unlike(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    return await _set_like(request, plural, namespace, name, hub, False)


@router.get("/api/{plural}/{namespace}/{name}/likers")
def likers(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    return JSONResponse([{"user": user, "fullname": user, "avatarUrl": None, "type": "user"}
                         for user in hub.storage.community.likers(repo.repo_type, repo.repo_id)])


@router.get("/api/users/{user}/likes")
def liked_by(request: Request, user: str, hub: Hub) -> Response:
    viewer = hub.viewer(request)
    items = []
    for repo_type, repo_id, liked_at in hub.storage.community.liked_by(user):
        repo = hub.storage.get_repo(repo_type, repo_id)
        if repo is not None and hub.may_read(viewer, repo):
            items.append({"createdAt": liked_at, "repo": {"name": repo_id, "type": repo_type}})
    return JSONResponse(items)
