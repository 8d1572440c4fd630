"""The commit route: an NDJSON body (a header line, then one line per file added, LFS file added, file
or folder deleted) applied in one commit to a branch, or to a new pull-request ref with ``create_pr``."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, HubContext, flag, read_body, repo_url
from hubtools.localhub.errors import BadRequest
from hubtools.localhub.storage import AddFile, DeleteFile, DeleteFolder, FileEntry, git_blob_oid, lfs_pointer

router = APIRouter()


def parse_commit_lines(body: bytes) -> tuple[dict, list[dict]]:
    header: dict | None = None
    operations: list[dict] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(f"Malformed NDJSON: line {number} is not valid JSON.") from None
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict) or "key" not in item:
            raise BadRequest(f"Malformed NDJSON: line {number} needs a 'key' and an object 'value'.")
        if item["key"] == "header":
            if header is not None or operations:
                raise BadRequest("Malformed NDJSON: the header must come first, once.")
            header = item["value"]
        else:
            operations.append(item)
    if header is None:
        raise BadRequest("Malformed NDJSON: the commit has no header line.")
    return header, operations


def build_operations(hub: HubContext, operations: list[dict]) -> list[AddFile | DeleteFile | DeleteFolder]:
    storage = hub.storage
    built: list[AddFile | DeleteFile | DeleteFolder] = []
    for item in operations:
        key, value = item["key"], item["value"]
        raw_path = value.get("path")
        if key == "deletedFolder" and isinstance(raw_path, str):
            raw_path = raw_path.rstrip("/")
        path = naming.check_path(raw_path)
        if key == "file":
            encoding = value.get("encoding", "base64")
            content = value.get("content")
            if not isinstance(content, str):
                raise BadRequest(f"File {path}: 'content' must be a string.")
            if encoding == "base64":
                try:
                    data = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest(f"File {path}: content is not valid base64.") from None
            elif encoding in ("utf-8", "utf8"):
                data = content.encode("utf-8")
            else:
                raise BadRequest(f"File {path}: unknown encoding {encoding!r}.")
            sha256 = storage.put_bytes(data)
            built.append(AddFile(path, FileEntry(sha256, len(data), git_blob_oid(data), False)))
        elif key == "lfsFile":
            oid = value.get("oid")
            if value.get("algo", "sha256") != "sha256" or not (
                isinstance(oid, str) and len(oid) == 64 and all(c in "0123456789abcdef" for c in oid)
            ):
                raise BadRequest(f"LFS file {path}: 'oid' must be a sha256 (64 lowercase hex characters).")
            if not storage.has_blob(oid):
                raise BadRequest(f"LFS file {path}: object {oid} was never uploaded (use the LFS batch API).")
            size = storage.blob_path(oid).stat().st_size
            if value.get("size") is not None and value.get("size") != size:
                raise BadRequest(f"LFS file {path}: size {value.get('size')} does not match the object ({size}).")
            built.append(AddFile(path, FileEntry(oid, size, git_blob_oid(lfs_pointer(oid, size)), True)))
        elif key == "deletedFile":
            built.append(DeleteFile(path))
        elif key == "deletedFolder":
            built.append(DeleteFolder(path))
        else:
            raise BadRequest(f"Malformed NDJSON: unknown operation {key!r}.")
    return built


@router.post("/api/{plural}/{namespace}/{name}/commit/{revision}")
async def commit(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    storage = hub.storage
    repo, user = hub.writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    create_pr = flag(request.query_params.get("create_pr"))
    body = await read_body(request, hub.settings.max_commit_body)
    header, raw_operations = parse_commit_lines(body)
    title = header.get("summary") or "Upload files"
    description = header.get("description") or ""
    parent_commit = header.get("parentCommit")
    if not isinstance(title, str) or not isinstance(description, str):
        raise BadRequest("The commit header's summary and description must be strings.")
    if parent_commit is not None and not isinstance(parent_commit, str):
        raise BadRequest("parentCommit must be a commit id.")
    operations = await run_in_threadpool(build_operations, hub, raw_operations)
    pr_url = None
    if create_pr:
        start, _ = hub.resolve(repo, revision)
        number = storage.next_pr_number(repo.repo_type, repo.repo_id)
        oid = await run_in_threadpool(
            lambda: storage.commit(repo.repo_type, repo.repo_id, str(number), operations, title=title,
                                   message=description, author=user, parent_commit=parent_commit,
                                   create_branch_from=start.oid, branch_kind="pr"))
        pr_url = f"{repo_url(request, repo)}/discussions/{number}"
    else:
        kind, branch = hub.branch_target(repo, revision)
        oid = await run_in_threadpool(
            lambda: storage.commit(repo.repo_type, repo.repo_id, branch, operations, title=title,
                                   message=description, author=user, parent_commit=parent_commit,
                                   branch_kind=kind))
    return JSONResponse({
        "success": True,
        "commitOid": oid,
        "commitUrl": f"{repo_url(request, repo)}/commit/{oid}",
        "pullRequestUrl": pr_url,
    })
