"""Upload routes before the commit: preupload (inline or LFS per file, as the Hub answers) and the LFS
batch API with its one-time upload and verify URLs ("tickets").

Preupload calls "lfs" what the Hub keeps in LFS (``stored_as_lfs``: over 10 MB, matched by
``.gitattributes``, or binary). A client with ``hf_xet`` (the default) then uploads it through Xet
(``hubtools.localhub.xet``), one with ``HF_HUB_DISABLE_XET=1`` through the LFS batch API below; either way
the file becomes the same sha256 blob and the commit names it by that sha256.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import fnmatch
import hashlib
import os
import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, HubContext, LfsTicket, base_url, flag, json_object
from hubtools.localhub.errors import BadRequest, NotFound
from hubtools.localhub.storage import Commit, FileEntry, Repo, git_blob_oid

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (non-LFS) files
INLINE_LIMIT = LFS_SIZE_THRESHOLD  # files up to this size are sent inline in the commit (see module doc)
SAMPLE_BYTES = 512  # what the client samples of each file for preupload
LFS_TICKET_TTL_S = 3600.0

router = APIRouter()


# ---- preupload -----------------------------------------------------------------------------------


def lfs_patterns(hub: HubContext, commit: Commit) -> list[str]:
    entry = commit.tree.get(".gitattributes")
    if entry is None or entry.size > 1024 * 1024:
        return []
    patterns = []
    for line in hub.storage.blobs.read_blob(entry.sha256).decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def is_lfs_path(path: str, patterns: list[str]) -> bool:
    basename = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        target = path if "/" in pattern else basename
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
            return True
    return False


def looks_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return True
    return False


def stored_as_lfs(path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
    """Whether the Hub keeps this file in LFS: by size, by ``.gitattributes``, or because it is binary."""
    return size > LFS_SIZE_THRESHOLD or is_lfs_path(path, patterns) or looks_binary(sample)


def storage_ref_name(kind: str, name: str) -> str:
    return {"branch": "refs/heads/", "pr": "refs/pr/", "tag": "refs/tags/"}[kind] + name


@router.post("/api/{plural}/{namespace}/{name}/preupload/{revision}")
async def preupload(request: Request, plural: str, namespace: str, name: str, revision: str,
                    hub: Hub) -> Response:
    repo, _ = hub.committable_repo(request, naming.repo_type_from_plural(plural), namespace, name, revision,
                                   flag(request.query_params.get("create_pr")))
    kind, branch = hub.branch_target(repo, revision)
    commit, _ = hub.storage.resolve(repo.repo_type, repo.repo_id, storage_ref_name(kind, branch))
    body = json_object(await hub.read_json(request))
    files = body.get("files")
    if not isinstance(files, list):
        raise BadRequest("preupload needs a JSON body with a list 'files'.")
    patterns = lfs_patterns(hub, commit)
    # Never more inline than one commit line may carry (base64 is 4/3 of the bytes, plus the JSON around).
    line_limit = min(hub.settings.max_commit_line, hub.settings.max_commit_body)
    inline_limit = min(INLINE_LIMIT, line_limit * 3 // 4 - 4096)
    answers = []
    for item in files:
        if not isinstance(item, dict):
            raise BadRequest("Each entry of 'files' must be an object with path, sample and size.")
        path = naming.check_path(item.get("path"))
        size = item.get("size")
        if not isinstance(size, int) or size < 0:
            raise BadRequest(f"Invalid size for {path}.")
        try:
            sample = base64.b64decode(item.get("sample") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadRequest(f"Invalid base64 sample for {path}.") from None
        inline = size <= inline_limit and not stored_as_lfs(path, size, sample[:SAMPLE_BYTES], patterns)
        existing = commit.tree.get(path)
        answers.append({"path": path, "uploadMode": "regular" if inline else "lfs", "shouldIgnore": False,
                        "oid": None if existing is None else await run_in_threadpool(
                            existing_oid, hub, existing, inline)})
    return JSONResponse({"files": answers, "commitOid": commit.oid})


def existing_oid(hub: HubContext, entry: FileEntry, inline: bool) -> str:
    """What the client compares with its own file to skip unchanged ones: the sha256 for an LFS upload,
    the git blob id of the content for an inline one (for a file stored as LFS, from its blob)."""
    if not inline:
        return entry.sha256
    if not entry.lfs:
        return entry.git_oid
    if entry.size > INLINE_LIMIT:
        return entry.sha256  # cannot be the same file: sizes differ
    return git_blob_oid(hub.storage.blobs.read_blob(entry.sha256))


# ---- the LFS batch API ---------------------------------------------------------------------------


def lfs_batch_repo(hub: HubContext, request: Request, plural_prefix: str, namespace: str,
                   name_git: str) -> tuple[Repo, str]:
    if not name_git.endswith(".git"):
        raise NotFound("Not found: no such endpoint.")
    repo_type = {"": "model", "datasets": "dataset", "spaces": "space"}[plural_prefix]
    # Objects are owned by the repo they are uploaded to and invisible until a commit names them: whoever
    # may commit to some ref of the repo (a writer, or anyone opening a pull request) may upload them.
    user = hub.require_actor(request)
    repo = hub.visible_repo(request, repo_type, namespace, name_git[: -len(".git")])
    hub.require_scope(request, repo.namespace)
    return repo, user


async def _lfs_batch(hub: HubContext, request: Request, plural_prefix: str, namespace: str,
                     name_git: str) -> Response:
    repo, _ = lfs_batch_repo(hub, request, plural_prefix, namespace, name_git)
    body = json_object(await hub.read_json(request))
    if body.get("operation") != "upload":
        raise BadRequest("Only the 'upload' operation of the LFS batch API is served; download via resolve.")
    objects = body.get("objects")
    if not isinstance(objects, list):
        raise BadRequest("The LFS batch request needs a list 'objects'.")
    base = base_url(request)
    answers = []
    now = time.monotonic()
    with hub.tickets_lock:
        for expired in [key for key, ticket in hub.lfs_tickets.items() if ticket.expires < now]:
            del hub.lfs_tickets[expired]
    for obj in objects:
        if not isinstance(obj, dict):
            raise BadRequest("Each LFS object must be an object with oid and size.")
        oid, size = obj.get("oid"), obj.get("size")
        if not (isinstance(oid, str) and len(oid) == 64 and all(c in "0123456789abcdef" for c in oid)):
            raise BadRequest("LFS oid must be 64 lowercase hex characters (sha256).")
        if not isinstance(size, int) or size < 0:
            raise BadRequest(f"Invalid size for LFS object {oid}.")
        if size > hub.settings.max_lfs_object:
            message = f"Object larger than {hub.settings.max_lfs_object} bytes."
            answers.append({"oid": oid, "size": size, "error": {"code": 422, "message": message}})
            continue
        # Only this repo's own objects are "already there": for any other, the client uploads the bytes
        # (proving it has them), so the answer never tells whether another repo holds that sha256.
        if hub.storage.blobs.owns(repo.repo_type, repo.repo_id, oid, size):
            answers.append({"oid": oid, "size": size})
            continue
        ticket = secrets.token_urlsafe(24)
        with hub.tickets_lock:
            hub.lfs_tickets[ticket] = LfsTicket(oid, size, now + LFS_TICKET_TTL_S, repo.repo_type, repo.repo_id)
        answers.append({
            "oid": oid,
            "size": size,
            "authenticated": True,
            "actions": {
                "upload": {"href": f"{base}/api/lfs-upload/{ticket}", "expires_in": int(LFS_TICKET_TTL_S)},
                "verify": {"href": f"{base}/api/lfs-verify/{ticket}"},
            },
        })
    return JSONResponse({"transfer": "basic", "objects": answers, "hash_algo": "sha256"},
                        media_type="application/vnd.git-lfs+json")


@router.post("/{namespace}/{name_git}/info/lfs/objects/batch")
async def lfs_batch_model(request: Request, namespace: str, name_git: str, hub: Hub) -> Response:
    return await _lfs_batch(hub, request, "", namespace, name_git)


@router.post("/datasets/{namespace}/{name_git}/info/lfs/objects/batch")
async def lfs_batch_dataset(request: Request, namespace: str, name_git: str, hub: Hub) -> Response:
    return await _lfs_batch(hub, request, "datasets", namespace, name_git)


@router.post("/spaces/{namespace}/{name_git}/info/lfs/objects/batch")
async def lfs_batch_space(request: Request, namespace: str, name_git: str, hub: Hub) -> Response:
    return await _lfs_batch(hub, request, "spaces", namespace, name_git)


def ticket_for(hub: HubContext, ticket: str) -> LfsTicket:
    with hub.tickets_lock:
        found = hub.lfs_tickets.get(ticket)
    if found is None or found.expires < time.monotonic():
        raise NotFound("Unknown or expired LFS upload URL: ask the batch endpoint again.")
    return found


@router.put("/api/lfs-upload/{ticket}")
async def lfs_upload(request: Request, ticket: str, hub: Hub) -> Response:
    expected = ticket_for(hub, ticket)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != expected.size:
        raise BadRequest(f"Upload is {declared} bytes but the LFS object is {expected.size} bytes.")
    fd, temp_path = hub.storage.blobs.new_temp_file()
    digest, total = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in request.stream():
                total += len(chunk)
                if total > expected.size:
                    raise BadRequest(f"Upload is larger than the LFS object ({expected.size} bytes).")
                digest.update(chunk)
                await run_in_threadpool(handle.write, chunk)
            await run_in_threadpool(handle.flush)
            await run_in_threadpool(os.fsync, handle.fileno())
        if total != expected.size or digest.hexdigest() != expected.oid:
            raise BadRequest("The uploaded bytes do not match the LFS object's oid (sha256) and size.")
        await run_in_threadpool(lambda: hub.storage.blobs.add_blob_for_repo(
            expected.repo_type, expected.repo_id, temp_path, expected.oid, verified=True))
    finally:
        if temp_path.exists():
            temp_path.unlink()
    return JSONResponse({})


@router.post("/api/lfs-verify/{ticket}")
async def lfs_verify(request: Request, ticket: str, hub: Hub) -> Response:
    hub.require_actor(request)
    expected = ticket_for(hub, ticket)
    hub.require_scope(request, expected.repo_id.split("/")[0])
    body = json_object(await hub.read_json(request))
    if body.get("oid") != expected.oid or not hub.storage.blobs.owns(expected.repo_type, expected.repo_id,
                                                                      expected.oid, expected.size):
        raise NotFound("The LFS object was not uploaded (or does not match its oid).")
    with hub.tickets_lock:
        hub.lfs_tickets.pop(ticket, None)
    return JSONResponse({"message": "verified"})
