"""The commit route: an NDJSON body (a header line, then one line per file added, LFS file added, file
or folder deleted) applied in one commit to a branch, or to a new pull-request ref with ``create_pr``.

The body is read line by line: a file sent inline is written to the blob store as soon as its line has
arrived, so memory holds one line, not the whole commit. An inline file that the Hub would keep in LFS
(by ``.gitattributes``, size or binary content) is stored as an LFS file, exactly as if it had come
through the LFS batch API (see ``routes_upload.preupload`` for why clients send them inline).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import MAX_COMMIT_TITLE, MAX_TEXT, MAX_TITLE, Hub, HubContext, check_text, flag, parse_json, repo_url
from hubtools.localhub.errors import BadRequest, PayloadTooLarge
from hubtools.localhub.routes_upload import SAMPLE_BYTES, lfs_patterns, storage_ref_name, stored_as_lfs
from hubtools.localhub.storage import AddFile, DeleteFile, DeleteFolder, FileEntry, Repo, git_blob_oid, lfs_pointer

router = APIRouter()


def parse_commit_line(line: bytes, number: int) -> dict:
    item = parse_json(line, f"Malformed NDJSON: line {number}")
    if not isinstance(item, dict) or not isinstance(item.get("value"), dict) or "key" not in item:
        raise BadRequest(f"Malformed NDJSON: line {number} needs a 'key' and an object 'value'.")
    return item


def _line_too_long(number: int, max_line: int) -> str:
    return f"Commit line {number} too large: at most {max_line} bytes per line (files over 10 MB go through LFS)."


async def ndjson_lines(request: Request, max_body: int, max_line: int) -> AsyncIterator[tuple[int, bytes]]:
    """The non-blank lines of the request body with their numbers, as they arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise PayloadTooLarge(f"Request body too large: at most {max_body} bytes.")
    # Linear in the body: each chunk is searched for newlines once, and the unfinished line grows in place,
    # so a line past ``max_line`` is refused as soon as that many bytes of it have arrived.
    pending, total, number = bytearray(), 0, 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_body:
            raise PayloadTooLarge(f"Request body too large: at most {max_body} bytes.")
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pending += chunk[start:end]
            start = end + 1
            number += 1
            if len(pending) > max_line:
                raise PayloadTooLarge(_line_too_long(number, max_line))
            if pending.strip():
                yield number, bytes(pending)
            pending.clear()
        else:
            pending += chunk[start:]
        if len(pending) > max_line:
            raise PayloadTooLarge(_line_too_long(number + 1, max_line))
    if pending.strip():
        yield number + 1, bytes(pending)


def build_operation(hub: HubContext, repo: Repo, item: dict,
                    lfs_rules: list[str]) -> AddFile | DeleteFile | DeleteFolder:
    """One NDJSON operation -> a storage operation; inline content goes to the blob store now, owned by
    ``repo``. An LFS file must name a blob the repo owns (uploaded to it, or in its history): knowing a
    sha256 reaches no other repo's file, and the answer is the same whether the blob exists elsewhere."""
    storage = hub.storage
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
        sha256 = storage.blobs.put_bytes_for_repo(repo.repo_type, repo.repo_id, data)
        if stored_as_lfs(path, len(data), data[:SAMPLE_BYTES], lfs_rules):
            return AddFile(path, FileEntry(sha256, len(data), git_blob_oid(lfs_pointer(sha256, len(data))), True))
        return AddFile(path, FileEntry(sha256, len(data), git_blob_oid(data), False))
    if key == "lfsFile":
        oid = value.get("oid")
        if value.get("algo", "sha256") != "sha256" or not (
            isinstance(oid, str) and len(oid) == 64 and all(c in "0123456789abcdef" for c in oid)
        ):
            raise BadRequest(f"LFS file {path}: 'oid' must be a sha256 (64 lowercase hex characters).")
        if not storage.blobs.owns(repo.repo_type, repo.repo_id, oid):
            raise BadRequest(f"LFS file {path}: object {oid} was never uploaded to this repo (use the LFS batch API).")
        size = storage.blobs.blob_path(oid).stat().st_size
        if value.get("size") is not None and value.get("size") != size:
            raise BadRequest(f"LFS file {path}: size {value.get('size')} does not match the object ({size}).")
        return AddFile(path, FileEntry(oid, size, git_blob_oid(lfs_pointer(oid, size)), True))
    if key == "deletedFile":
        return DeleteFile(path)
    if key == "deletedFolder":
        return DeleteFolder(path)
    raise BadRequest(f"Malformed NDJSON: unknown operation {key!r}.")


@router.post("/api/{plural}/{namespace}/{name}/commit/{revision}")
async def commit(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    storage = hub.storage
    create_pr = flag(request.query_params.get("create_pr"))
    repo, user = hub.committable_repo(request, naming.repo_type_from_plural(plural), namespace, name, revision,
                                      create_pr)
    target, _ = hub.resolve(repo, revision) if create_pr else hub.storage.resolve(
        repo.repo_type, repo.repo_id, storage_ref_name(*hub.branch_target(repo, revision)))
    lfs_rules = lfs_patterns(hub, target)
    header: dict | None = None
    operations: list[AddFile | DeleteFile | DeleteFolder] = []
    async for number, line in ndjson_lines(request, hub.settings.max_commit_body, hub.settings.max_commit_line):
        item = parse_commit_line(line, number)
        if item["key"] == "header":
            if header is not None or operations:
                raise BadRequest("Malformed NDJSON: the header must come first, once.")
            header = item["value"]
        else:
            operations.append(await run_in_threadpool(build_operation, hub, repo, item, lfs_rules))
    if header is None:
        raise BadRequest("Malformed NDJSON: the commit has no header line.")
    title = header.get("summary") or "Upload files"
    description = header.get("description") or ""
    parent_commit = header.get("parentCommit")
    if not isinstance(title, str) or not isinstance(description, str):
        raise BadRequest("The commit header's summary and description must be strings.")
    check_text(title, "The commit's summary", MAX_TITLE if create_pr else MAX_COMMIT_TITLE)  # a PR's title
    check_text(description, "The commit's description", MAX_TEXT)
    if parent_commit is not None and not isinstance(parent_commit, str):
        raise BadRequest("parentCommit must be a commit id.")
    pr_url = None
    if create_pr:
        kind, branch = hub.branch_target(repo, revision)
        if kind != "branch":
            raise BadRequest("A pull request merges into a branch: open it against a branch, e.g. main.")
        number = await run_in_threadpool(
            lambda: storage.community.create_discussion(repo.repo_type, repo.repo_id, title=title, author=user,
                                              description=description, pull_request=True, status="open",
                                              target=branch))
        try:
            oid = await run_in_threadpool(
                lambda: storage.commit(repo.repo_type, repo.repo_id, str(number), operations, title=title,
                                       message=description, author=user, parent_commit=parent_commit,
                                       branch_kind="pr"))
        except BaseException:
            await run_in_threadpool(storage.community.delete_discussion, repo.repo_type, repo.repo_id, number)
            raise
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
