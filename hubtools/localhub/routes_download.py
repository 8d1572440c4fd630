"""The download routes for each repo type: ``resolve/{revision}/{path}`` (the file's content), GET or HEAD,
with one byte Range (what huggingface_hub's resumed and parallel downloads send), and ``raw/`` (the file
as git stores it, as on the Hub: an LFS file's pointer).

A file is untrusted content served from the hub's own origin: every answer says ``nosniff`` and a
sandboxing Content-Security-Policy, so an HTML or SVG file opened in a browser runs nothing. Without a
token, a same-origin GET from a signed-in browser reads as its user (``HubContext.file_reader``): the
pages' images and Download links of a private repo work for those who may read it, and answer everyone
else exactly like a missing repo.

Every read is verified (``BlobStore``): a whole file is hashed as it streams and its last chunk held back
until the hash matches, so a damaged blob ends the connection before the last byte (the client fails and
caches nothing); a range is served from a blob hashed whole since it last changed on disk. A damaged blob
is set aside and logged with the repos and paths that use it; later reads answer 500 with why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.blobs import BlobDamaged
from hubtools.localhub.context import Hub, HubContext, repo_url
from hubtools.localhub.errors import EntryNotFound, RangeNotSatisfiable
from hubtools.localhub.trees import lfs_pointer

SMALL_FILE = 256 * 1024
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}

router = APIRouter()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` -> (a, b) inclusive; None for no (or a multi-) range; raises 416 when unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    start_text, dash, end_text = spec.strip().partition("-")
    try:
        if not dash:
            raise ValueError
        if start_text == "":
            suffix = int(end_text)
            if suffix <= 0:
                raise ValueError
            start, end = max(size - suffix, 0), size - 1
        else:
            start = int(start_text)
            end = int(end_text) if end_text else size - 1
    except ValueError:
        raise RangeNotSatisfiable(f"Invalid Range header {header!r}.", extra={"size": size}) from None
    end = min(end, size - 1)
    if start < 0 or start > end:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the file ({size} bytes).", extra={"size": size})
    return start, end


def content_disposition(file_name: str) -> str:
    """``inline`` with the name as RFC 6266 gives it: an ASCII ``filename`` for old clients and the exact
    name as ``filename*`` (UTF-8, percent-encoded)."""
    fallback = file_name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def _file_entry(hub: HubContext, request: Request, repo_type: str, namespace: str, name: str, revision: str,
                path: str) -> tuple[Any, Any, str]:
    reader = hub.file_reader(request)
    repo = hub.repo_visible_to(reader, repo_type, namespace, name)
    commit, _ = hub.resolve(repo, revision)
    file_path = naming.check_path(unquote(path))
    hub.require_download(reader, repo, file_path, repo_url(request, repo))
    entry = commit.tree.get(file_path)
    if entry is None:
        raise EntryNotFound(f"{file_path} does not exist at revision {unquote(revision)}.",
                            extra={"repo_commit": commit.oid})
    return commit, entry, file_path


async def _resolve_file(hub: HubContext, request: Request, repo_type: str, namespace: str, name: str, revision: str,
                        path: str) -> Response:
    commit, entry, file_path = _file_entry(hub, request, repo_type, namespace, name, revision, path)
    headers = {
        "X-Repo-Commit": commit.oid,
        "ETag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(file_path.rsplit("/", 1)[-1]),
        **FILE_HEADERS,
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
    byte_range = parse_range(request.headers.get("range"), entry.size) if entry.size else None
    status, start, length = 200, 0, entry.size
    if byte_range is not None:
        start, end = byte_range
        status, length = 206, end - start + 1
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    headers["Content-Length"] = str(length)
    blobs = hub.storage.blobs
    if request.method == "HEAD":
        if not blobs.has_blob(entry.sha256):
            blobs.read_range(entry.sha256, 0, 0)  # BlobDamaged: say so now rather than on the GET
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    if entry.size <= SMALL_FILE:  # one read, checked whole: most files of a big repo are small
        content = blobs.read_blob(entry.sha256)[start:start + length]
        return Response(content, status_code=status, headers=headers, media_type="application/octet-stream")
    # A range of a big file checks the whole blob first (once per change on disk): in the thread pool.
    if length <= SMALL_FILE:
        content = await run_in_threadpool(blobs.read_range, entry.sha256, start, length)
        return Response(content, status_code=status, headers=headers, media_type="application/octet-stream")
    chunks = blobs.stream_whole(entry.sha256, entry.size) if length == entry.size else blobs.stream_range(
        entry.sha256, start, length)
    first = await run_in_threadpool(next, chunks, b"")  # opens (and checks) the blob before the status is sent
    return VerifiedStream(first, chunks, status, headers)


class VerifiedStream(Response):
    """A body read from a blob iterator in the thread pool. When the blob turns out damaged (already logged
    and set aside), the body ends short of its Content-Length without its final message: the server
    closes the connection (uvicorn logs one line, no traceback) and the client fails."""

    def __init__(self, first: bytes, chunks: Iterator[bytes], status_code: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status_code, headers=headers, media_type="application/octet-stream")
        self.first, self.chunks = first, chunks

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk: bytes | None = self.first
        while chunk is not None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            try:
                chunk = await run_in_threadpool(next, self.chunks, None)
            except BlobDamaged:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _resolve_route(bound_type: str):
    # async: the lookups are two indexed queries and a small file is one read, cheaper on the event loop
    # than the hop to the thread pool (about half of a request's cost); big files still stream from a thread.
    async def resolve_file(request: Request, namespace: str, name: str, revision: str, path: str,
                           hub: Hub) -> Response:
        return await _resolve_file(hub, request, bound_type, namespace, name, revision, path)

    return resolve_file


def _raw_file(hub: HubContext, request: Request, repo_type: str, namespace: str, name: str, revision: str,
              path: str) -> Response:
    commit, entry, file_path = _file_entry(hub, request, repo_type, namespace, name, revision, path)
    content = lfs_pointer(entry.sha256, entry.size) if entry.lfs else hub.storage.blobs.read_blob(entry.sha256)
    headers = {"X-Repo-Commit": commit.oid, "Content-Disposition": content_disposition(file_path.rsplit("/", 1)[-1]),
               "Content-Length": str(len(content)), **FILE_HEADERS}
    media_type = "application/octet-stream" if b"\0" in content[:8000] else "text/plain; charset=utf-8"
    return Response(b"" if request.method == "HEAD" else content, headers=headers, media_type=media_type)


def _raw_route(bound_type: str):
    def raw_file(request: Request, namespace: str, name: str, revision: str, path: str, hub: Hub) -> Response:
        return _raw_file(hub, request, bound_type, namespace, name, revision, path)

    return raw_file


for _prefix, _repo_type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):
    router.add_api_route(f"{_prefix}/{{namespace}}/{{name}}/resolve/{{revision}}/{{path:path}}",
                         _resolve_route(_repo_type), methods=["GET", "HEAD"], name=f"resolve_{_repo_type}")
    router.add_api_route(f"{_prefix}/{{namespace}}/{{name}}/raw/{{revision}}/{{path:path}}",
                         _raw_route(_repo_type), methods=["GET", "HEAD"], name=f"raw_{_repo_type}")
