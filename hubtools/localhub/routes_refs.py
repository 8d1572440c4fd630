"""Ref-writing routes: create and delete branches and tags (the main branch cannot be deleted)."""

from __future__ import annotations

from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, json_object
from hubtools.localhub.errors import BadRequest, Forbidden
from hubtools.localhub.storage import DEFAULT_BRANCH

router = APIRouter()


@router.post("/api/{plural}/{namespace}/{name}/branch/{branch}")
async def create_branch(request: Request, plural: str, namespace: str, name: str, branch: str,
                        hub: Hub) -> Response:
    repo, _ = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    branch_name = naming.check_ref_name(unquote(branch), "branch")
    body = json_object(await hub.read_json(request))
    starting_point = body.get("startingPoint") or DEFAULT_BRANCH
    if not isinstance(starting_point, str):
        raise BadRequest("'startingPoint' must be a revision name.")
    commit, _ = hub.storage.resolve(repo.repo_type, repo.repo_id, starting_point)
    await run_in_threadpool(hub.storage.create_ref, repo.repo_type, repo.repo_id, "branch", branch_name, commit.oid)
    return JSONResponse({})


@router.delete("/api/{plural}/{namespace}/{name}/branch/{branch}")
async def delete_branch(request: Request, plural: str, namespace: str, name: str, branch: str,
                        hub: Hub) -> Response:
    repo, _ = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    branch_name = unquote(branch)
    if branch_name == DEFAULT_BRANCH:
        raise Forbidden("The default branch 'main' cannot be deleted.")
    await run_in_threadpool(hub.storage.delete_ref, repo.repo_type, repo.repo_id, "branch", branch_name)
    return JSONResponse({})


@router.post("/api/{plural}/{namespace}/{name}/tag/{revision}")
async def create_tag(request: Request, plural: str, namespace: str, name: str, revision: str,
                     hub: Hub) -> Response:
    repo, _ = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    body = json_object(await hub.read_json(request))
    tag = naming.check_ref_name(body.get("tag"), "tag")
    commit, _ = hub.resolve(repo, revision)
    await run_in_threadpool(hub.storage.create_ref, repo.repo_type, repo.repo_id, "tag", tag, commit.oid)
    return JSONResponse({})


@router.delete("/api/{plural}/{namespace}/{name}/tag/{tag}")
async def delete_tag(request: Request, plural: str, namespace: str, name: str, tag: str, hub: Hub) -> Response:
    repo, _ = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    await run_in_threadpool(hub.storage.delete_ref, repo.repo_type, repo.repo_id, "tag", unquote(tag))
    return JSONResponse({})
