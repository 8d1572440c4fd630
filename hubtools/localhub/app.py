"""The FastAPI app: the subset of the Hub's HTTP API that huggingface_hub, datasets and diffusers use.

Routes match the *raw* (still percent-encoded) request path, because the clients quote revisions with
``safe=""`` (``refs%2Fpr%2F1`` is one segment) and paths in a tree with ``safe=""`` too; every path
parameter is unquoted here, then validated by ``naming`` before it reaches storage.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import fnmatch
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubtools.localhub import naming
from hubtools.localhub.auth import TokenBook
from hubtools.localhub.cards import CardMetadataError, derive_tags, parse_card_metadata
from hubtools.localhub.errors import (
    BadRequest,
    EntryNotFound,
    Forbidden,
    HubHTTPError,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RepoNotFound,
    RevisionNotFound,
)
from hubtools.localhub.storage import (
    DEFAULT_BRANCH,
    AddFile,
    Commit,
    DeleteFile,
    DeleteFolder,
    FileEntry,
    Repo,
    Storage,
    git_blob_oid,
    lfs_pointer,
)

logger = logging.getLogger("hubtools.localhub")

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (non-LFS) files
MAX_JSON_BODY = 16 * 1024 * 1024
MAX_COMMIT_BODY = 512 * 1024 * 1024
MAX_LFS_OBJECT = 64 * 1024**3
LFS_TICKET_TTL_S = 3600.0
CHUNK = 1024 * 1024


@dataclass
class _LfsTicket:
    oid: str
    size: int
    expires: float


@dataclass
class HubSettings:
    max_json_body: int = MAX_JSON_BODY
    max_commit_body: int = MAX_COMMIT_BODY
    max_lfs_object: int = MAX_LFS_OBJECT


def create_app(storage: Storage, tokens: TokenBook, settings: HubSettings | None = None) -> Any:
    """The ASGI app serving ``storage``. Wrapped so routes see the raw path (see module docstring)."""
    settings = settings or HubSettings()
    api = FastAPI(title="hubtools local hub", docs_url=None, redoc_url=None, openapi_url=None)
    lfs_tickets: dict[str, _LfsTicket] = {}
    tickets_lock = threading.Lock()

    # ---- errors ------------------------------------------------------------------------------

    def error_response(status: int, message: str, code: str | None = None, extra: dict | None = None,
                       headers: dict[str, str] | None = None) -> JSONResponse:
        header_message = message.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:500]
        all_headers = {"X-Error-Message": header_message, **(headers or {})}
        if code:
            all_headers["X-Error-Code"] = code
        return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=all_headers)

    @api.exception_handler(HubHTTPError)
    async def _hub_error(request: Request, error: HubHTTPError) -> Response:
        headers = {}
        if isinstance(error, RangeNotSatisfiable) and "size" in error.extra:
            headers["Content-Range"] = f"bytes */{error.extra.pop('size')}"
        if "repo_commit" in error.extra:
            headers["X-Repo-Commit"] = error.extra.pop("repo_commit")
        return error_response(error.status, error.message, error.code, error.extra, headers)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = "Not found: no such endpoint." if error.status_code == 404 else str(error.detail)
        return error_response(error.status_code, message)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        return error_response(400, "Malformed request.")

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:  # pragma: no cover - a bug
        logger.exception("local hub: unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal error of the local hub (a bug in hubtools).")

    # ---- helpers -----------------------------------------------------------------------------

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def repo_url(request: Request, repo: Repo) -> str:
        return f"{base_url(request)}/{naming.URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def viewer(request: Request) -> str | None:
        authorization = request.headers.get("authorization")
        user = tokens.user_for(authorization)
        if authorization and user is None:
            tokens.require_user(authorization)  # raises 401 for a wrong token
        return user

    def visible_repo(request: Request, repo_type: str, namespace: str, name: str) -> Repo:
        repo_id = naming.check_repo_id(unquote(namespace), unquote(name))
        repo = storage.get_repo(repo_type, repo_id)
        if repo is None or (repo.private and viewer(request) != repo.owner):
            raise RepoNotFound(f"Repository {repo_id} not found (or private and you are not its owner).")
        return repo

    def writable_repo(request: Request, repo_type: str, namespace: str, name: str) -> tuple[Repo, str]:
        user = tokens.require_user(request.headers.get("authorization"))
        repo = visible_repo(request, repo_type, namespace, name)
        tokens.require_owner(user, repo.owner)
        return repo, user

    async def read_body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise PayloadTooLarge(f"Request body too large: at most {limit} bytes.")
            except ValueError:
                raise BadRequest("Invalid Content-Length header.") from None
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"Request body too large: at most {limit} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_json(request: Request) -> Any:
        body = await read_body(request, settings.max_json_body)
        if not body:
            return {}
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("Request body is not valid JSON.") from None

    def json_object(value: Any) -> dict:
        if not isinstance(value, dict):
            raise BadRequest("Request body must be a JSON object.")
        return value

    def flag(value: str | None) -> bool:
        return value is not None and value.lower() in ("1", "true", "yes")

    def resolve(repo: Repo, revision: str) -> tuple[Commit, Any]:
        return storage.resolve(repo.repo_type, repo.repo_id, unquote(revision))

    def card_of(commit: Commit) -> dict | None:
        entry = commit.tree.get("README.md")
        if entry is None or entry.size > 1024 * 1024:
            return None
        try:
            return parse_card_metadata(storage.read_blob(entry.sha256).decode("utf-8", "replace"))
        except (CardMetadataError, OSError):
            return None

    def repo_json(request: Request, repo: Repo, commit: Commit, head: Commit | None = None) -> dict:
        card = card_of(commit)
        paths = sorted(commit.tree)
        tags, library_name, pipeline_tag = derive_tags(card, paths)
        siblings = []
        for path in paths:
            entry = commit.tree[path]
            sibling: dict[str, Any] = {"rfilename": path, "size": entry.size, "blobId": entry.git_oid}
            if entry.lfs:
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        data: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "tags": tags,
            "siblings": siblings,
            "cardData": card,
            "usedStorage": sum(entry.size for entry in commit.tree.values()),
        }
        if repo.repo_type == "model":
            data["modelId"] = repo.repo_id
            data["library_name"] = library_name
            data["pipeline_tag"] = pipeline_tag
        if repo.repo_type == "space":
            data["sdk"] = (card or {}).get("sdk")
        return data

    def tree_entry_json(path: str, entry: FileEntry) -> dict:
        data: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs:
            data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return data

    def folder_json(commit: Commit, folder: str) -> dict:
        prefix = folder + "/"
        listing = "\n".join(f"{p}:{e.git_oid}" for p, e in sorted(commit.tree.items()) if p.startswith(prefix))
        return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": folder}

    def folders_of(commit: Commit) -> set[str]:
        folders: set[str] = set()
        for path in commit.tree:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folders.add("/".join(parts[:depth]))
        return folders

    def last_commit_json(repo: Repo, commit: Commit, path: str, is_folder: bool) -> dict:
        """The latest commit (from ``commit`` back) that changed ``path`` (a file, or anything under a folder)."""

        def snapshot(candidate: Commit) -> Any:
            if not is_folder:
                return candidate.tree.get(path)
            prefix = path + "/"
            return sorted((p, e.git_oid) for p, e in candidate.tree.items() if p.startswith(prefix))

        history = storage.history(repo.repo_type, repo.repo_id, commit)
        current = snapshot(commit)
        last = commit
        for older in history[1:]:
            if snapshot(older) != current:
                break
            last = older
        return {"id": last.oid, "title": last.title, "date": last.date}

    def with_expand(repo: Repo, commit: Commit, item: dict, expand: bool) -> dict:
        if expand:
            item["lastCommit"] = last_commit_json(repo, commit, item["path"], item["type"] == "directory")
        return item

    # ---- account -----------------------------------------------------------------------------

    @api.get("/api/whoami-v2")
    def whoami(request: Request) -> dict:
        user = tokens.require_user(request.headers.get("authorization"))
        return {
            "type": "user",
            "id": hashlib.sha1(user.encode()).hexdigest()[:24],
            "name": user,
            "fullname": user,
            "email": None,
            "emailVerified": False,
            "isPro": False,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        }

    @api.post("/api/validate-yaml")
    async def validate_yaml(request: Request) -> Response:
        body = json_object(await read_json(request))
        content = body.get("content")
        if not isinstance(content, str):
            raise BadRequest("validate-yaml needs a JSON body with a string 'content'.")
        try:
            parse_card_metadata(content)
        except CardMetadataError as error:
            raise BadRequest(str(error)) from None
        return JSONResponse({"errors": [], "warnings": []})

    # ---- repos -------------------------------------------------------------------------------

    def repo_id_from_body(body: dict, user: str) -> tuple[str, str]:
        repo_type = naming.check_repo_type(body.get("type"))
        name = body.get("name")
        namespace = body.get("organization") or user
        if not isinstance(name, str) or not isinstance(namespace, str):
            raise BadRequest("The body needs a string 'name' (and optionally 'organization').")
        return repo_type, naming.check_repo_id(namespace, name)

    @api.post("/api/repos/create")
    async def create_repo(request: Request) -> Response:
        user = tokens.require_user(request.headers.get("authorization"))
        body = json_object(await read_json(request))
        repo_type, repo_id = repo_id_from_body(body, user)
        tokens.require_owner(user, repo_id.split("/")[0])
        private = body.get("private")
        if body.get("visibility") is not None:
            private = body["visibility"] in ("private", "protected")
        url = f"{base_url(request)}/{naming.URL_PREFIXES[repo_type]}{repo_id}"
        existing = storage.get_repo(repo_type, repo_id)
        if existing is not None:
            return error_response(409, f"You already created this {repo_type} repo", extra={"url": url})
        await run_in_threadpool(storage.create_repo, repo_type, repo_id, user, bool(private))
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    @api.delete("/api/repos/delete")
    async def delete_repo(request: Request) -> Response:
        user = tokens.require_user(request.headers.get("authorization"))
        body = json_object(await read_json(request))
        repo_type, repo_id = repo_id_from_body(body, user)
        namespace, name = repo_id.split("/")
        repo = visible_repo(request, repo_type, namespace, name)
        tokens.require_owner(user, repo.owner)
        await run_in_threadpool(storage.delete_repo, repo_type, repo_id)
        return JSONResponse({})

    @api.put("/api/{plural}/{namespace}/{name}/settings")
    async def repo_settings(request: Request, plural: str, namespace: str, name: str) -> Response:
        repo, _ = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        body = json_object(await read_json(request))
        private = body.get("private")
        if body.get("visibility") is not None:
            if body["visibility"] not in ("private", "public", "protected"):
                raise BadRequest("visibility must be 'private' or 'public'.")
            private = body["visibility"] != "public"
        if private is not None:
            if not isinstance(private, bool):
                raise BadRequest("'private' must be true or false.")
            await run_in_threadpool(storage.set_private, repo.repo_type, repo.repo_id, private)
        return JSONResponse({})

    # ---- info and listings -------------------------------------------------------------------

    @api.get("/api/{plural}")
    def list_repos(request: Request, plural: str) -> Response:
        repo_type = naming.repo_type_from_plural(plural)
        user = viewer(request)
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
        for repo in storage.list_repos(repo_type):
            if repo.private and user != repo.owner:
                continue
            if author and repo.repo_id.split("/")[0] != author:
                continue
            if searches and not all(s in repo.repo_id.lower() for s in searches):
                continue
            try:
                commit, _ = storage.resolve(repo.repo_type, repo.repo_id, DEFAULT_BRANCH)
            except HubHTTPError:
                continue
            item = repo_json(request, repo, commit)
            if filters and not all(f in item["tags"] or f == item.get("library_name") for f in filters):
                continue
            items.append(item)
        sort_keys = {
            "likes": "likes",
            "downloads": "downloads",
            "lastModified": "lastModified",
            "last_modified": "lastModified",
            "createdAt": "createdAt",
            "created_at": "createdAt",
            "trendingScore": "likes",
        }
        if sort:
            if sort not in sort_keys:
                raise BadRequest(f"Unknown sort {sort!r}: use likes, downloads, lastModified or createdAt.")
            key = sort_keys[sort]
            ascending = params.get("direction") == "1"
            items.sort(key=lambda item: (item[key], item["id"]), reverse=not ascending)
        else:
            items.sort(key=lambda item: item["id"])
        if limit is not None:
            items = items[: max(limit, 0)]
        return JSONResponse(items)

    def _info(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        repo = visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        commit, _ = resolve(repo, revision)
        return JSONResponse(repo_json(request, repo, commit))

    @api.get("/api/{plural}/{namespace}/{name}")
    def repo_info(request: Request, plural: str, namespace: str, name: str) -> Response:
        return _info(request, plural, namespace, name, DEFAULT_BRANCH)

    @api.get("/api/{plural}/{namespace}/{name}/revision/{revision}")
    def repo_info_at(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        return _info(request, plural, namespace, name, revision)

    def _tree(request: Request, plural: str, namespace: str, name: str, revision: str, path: str) -> Response:
        repo = visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        commit, _ = resolve(repo, revision)
        folder = unquote(path).strip("/")
        if folder:
            naming.check_path(folder)
        recursive = flag(request.query_params.get("recursive"))
        expand = flag(request.query_params.get("expand"))
        folders = folders_of(commit)
        if folder and folder not in folders:
            raise EntryNotFound(f"{folder} does not exist at revision {unquote(revision)}.",
                                extra={"repo_commit": commit.oid})
        prefix = folder + "/" if folder else ""

        def wanted(candidate: str) -> bool:
            if not candidate.startswith(prefix) or candidate == folder:
                return False
            return recursive or "/" not in candidate[len(prefix):]

        items = [with_expand(repo, commit, folder_json(commit, f), expand) for f in sorted(folders) if wanted(f)]
        items += [
            with_expand(repo, commit, tree_entry_json(p, commit.tree[p]), expand)
            for p in sorted(commit.tree)
            if wanted(p)
        ]
        return JSONResponse(items)

    @api.get("/api/{plural}/{namespace}/{name}/tree/{revision}")
    def tree_root(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        return _tree(request, plural, namespace, name, revision, "")

    @api.get("/api/{plural}/{namespace}/{name}/tree/{revision}/{path:path}")
    def tree_path(request: Request, plural: str, namespace: str, name: str, revision: str, path: str) -> Response:
        return _tree(request, plural, namespace, name, revision, path)

    @api.post("/api/{plural}/{namespace}/{name}/paths-info/{revision}")
    async def paths_info(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        repo = visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        commit, _ = resolve(repo, revision)
        body = await read_body(request, settings.max_json_body)
        if "json" in request.headers.get("content-type", ""):
            try:
                data = json_object(json.loads(body or b"{}"))
            except ValueError:
                raise BadRequest("Request body is not valid JSON.") from None
            paths = data.get("paths", [])
            expand = bool(data.get("expand"))
        else:
            try:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                raise BadRequest("Request body is not valid UTF-8.") from None
            paths = form.get("paths", [])
            expand = flag((form.get("expand") or ["false"])[0])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadRequest("'paths' must be a list of strings.")
        folders = folders_of(commit)
        items = []
        for raw in paths:
            path = raw.strip("/")
            if not path:
                continue
            naming.check_path(path)
            if path in commit.tree:
                items.append(with_expand(repo, commit, tree_entry_json(path, commit.tree[path]), expand))
            elif path in folders:
                items.append(with_expand(repo, commit, folder_json(commit, path), expand))
        return JSONResponse(items)

    @api.get("/api/{plural}/{namespace}/{name}/refs")
    def list_refs(request: Request, plural: str, namespace: str, name: str) -> Response:
        repo = visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        refs = storage.list_refs(repo.repo_type, repo.repo_id)

        def as_json(ref: Any) -> dict:
            return {"name": ref.name, "ref": ref.full_name, "targetCommit": ref.commit_oid}

        data = {
            "branches": [as_json(r) for r in refs if r.kind == "branch"],
            "converts": [],
            "tags": [as_json(r) for r in refs if r.kind == "tag"],
        }
        if flag(request.query_params.get("include_prs")):
            data["pullRequests"] = [as_json(r) for r in refs if r.kind == "pr"]
        return JSONResponse(data)

    @api.get("/api/{plural}/{namespace}/{name}/commits/{revision}")
    def list_commits(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        repo = visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        commit, _ = resolve(repo, revision)
        items = []
        for item in storage.history(repo.repo_type, repo.repo_id, commit):
            items.append({
                "id": item.oid,
                "title": item.title,
                "message": item.message,
                "authors": [{"user": item.author}],
                "date": item.date,
                "formatted": {"title": item.title, "message": item.message},
            })
        return JSONResponse(items)

    # ---- branches and tags -------------------------------------------------------------------

    @api.post("/api/{plural}/{namespace}/{name}/branch/{branch}")
    async def create_branch(request: Request, plural: str, namespace: str, name: str, branch: str) -> Response:
        repo, _ = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        branch_name = naming.check_ref_name(unquote(branch), "branch")
        body = json_object(await read_json(request))
        starting_point = body.get("startingPoint") or DEFAULT_BRANCH
        if not isinstance(starting_point, str):
            raise BadRequest("'startingPoint' must be a revision name.")
        commit, _ = storage.resolve(repo.repo_type, repo.repo_id, starting_point)
        await run_in_threadpool(storage.create_ref, repo.repo_type, repo.repo_id, "branch", branch_name, commit.oid)
        return JSONResponse({})

    @api.delete("/api/{plural}/{namespace}/{name}/branch/{branch}")
    async def delete_branch(request: Request, plural: str, namespace: str, name: str, branch: str) -> Response:
        repo, _ = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        branch_name = unquote(branch)
        if branch_name == DEFAULT_BRANCH:
            raise Forbidden("The default branch 'main' cannot be deleted.")
        await run_in_threadpool(storage.delete_ref, repo.repo_type, repo.repo_id, "branch", branch_name)
        return JSONResponse({})

    @api.post("/api/{plural}/{namespace}/{name}/tag/{revision}")
    async def create_tag(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        repo, _ = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        body = json_object(await read_json(request))
        tag = naming.check_ref_name(body.get("tag"), "tag")
        commit, _ = resolve(repo, revision)
        await run_in_threadpool(storage.create_ref, repo.repo_type, repo.repo_id, "tag", tag, commit.oid)
        return JSONResponse({})

    @api.delete("/api/{plural}/{namespace}/{name}/tag/{tag}")
    async def delete_tag(request: Request, plural: str, namespace: str, name: str, tag: str) -> Response:
        repo, _ = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        await run_in_threadpool(storage.delete_ref, repo.repo_type, repo.repo_id, "tag", unquote(tag))
        return JSONResponse({})

    # ---- uploads -----------------------------------------------------------------------------

    def lfs_patterns(commit: Commit) -> list[str]:
        entry = commit.tree.get(".gitattributes")
        if entry is None or entry.size > 1024 * 1024:
            return []
        patterns = []
        for line in storage.read_blob(entry.sha256).decode("utf-8", "replace").splitlines():
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

    def branch_target(repo: Repo, revision: str) -> tuple[str, str]:
        """The (kind, name) of the ref a commit to ``revision`` moves: a branch or an open PR ref."""
        kind, name = storage.split_revision(unquote(revision))
        kind = kind or "branch"
        if kind == "tag":
            raise BadRequest("Cannot commit to a tag: commit to a branch.")
        if storage.get_ref(repo.repo_type, repo.repo_id, kind, name) is None:
            raise RevisionNotFound(f"Invalid rev id: {name} is not a branch (create it first with create_branch).")
        return kind, name

    @api.get("/api/{plural}/{namespace}/{name}/xet-write-token/{revision}")
    @api.get("/api/{plural}/{namespace}/{name}/xet-read-token/{revision}")
    def xet_token(plural: str, namespace: str, name: str, revision: str) -> Response:
        raise BadRequest("This local hub stores files with plain LFS, not Xet: set HF_HUB_DISABLE_XET=1 "
                         "(hubtools.hubenv.point_clients_at does) before using the client.")

    @api.post("/api/{plural}/{namespace}/{name}/preupload/{revision}")
    async def preupload(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        repo, _ = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        kind, branch = branch_target(repo, revision)
        commit, _ = storage.resolve(repo.repo_type, repo.repo_id, storage_ref_name(kind, branch))
        body = json_object(await read_json(request))
        files = body.get("files")
        if not isinstance(files, list):
            raise BadRequest("preupload needs a JSON body with a list 'files'.")
        patterns = lfs_patterns(commit)
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
            lfs = size > LFS_SIZE_THRESHOLD or is_lfs_path(path, patterns) or looks_binary(sample)
            existing = commit.tree.get(path)
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return JSONResponse({"files": answers, "commitOid": commit.oid})

    def storage_ref_name(kind: str, name: str) -> str:
        return {"branch": "refs/heads/", "pr": "refs/pr/", "tag": "refs/tags/"}[kind] + name

    def lfs_batch_repo(request: Request, plural_prefix: str, namespace: str, name_git: str) -> tuple[Repo, str]:
        if not name_git.endswith(".git"):
            raise NotFound("Not found: no such endpoint.")
        repo_type = {"": "model", "datasets": "dataset", "spaces": "space"}[plural_prefix]
        return writable_repo(request, repo_type, namespace, name_git[: -len(".git")])

    async def _lfs_batch(request: Request, plural_prefix: str, namespace: str, name_git: str) -> Response:
        lfs_batch_repo(request, plural_prefix, namespace, name_git)
        body = json_object(await read_json(request))
        if body.get("operation") != "upload":
            raise BadRequest("Only the 'upload' operation of the LFS batch API is served; download via resolve.")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise BadRequest("The LFS batch request needs a list 'objects'.")
        base = base_url(request)
        answers = []
        now = time.monotonic()
        with tickets_lock:
            for expired in [key for key, ticket in lfs_tickets.items() if ticket.expires < now]:
                del lfs_tickets[expired]
        for obj in objects:
            if not isinstance(obj, dict):
                raise BadRequest("Each LFS object must be an object with oid and size.")
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and len(oid) == 64 and all(c in "0123456789abcdef" for c in oid)):
                raise BadRequest("LFS oid must be 64 lowercase hex characters (sha256).")
            if not isinstance(size, int) or size < 0:
                raise BadRequest(f"Invalid size for LFS object {oid}.")
            if size > settings.max_lfs_object:
                answers.append({"oid": oid, "size": size,
                                "error": {"code": 422, "message": f"Object larger than {settings.max_lfs_object} bytes."}})
                continue
            if storage.has_blob(oid, size):
                answers.append({"oid": oid, "size": size})
                continue
            ticket = secrets.token_urlsafe(24)
            with tickets_lock:
                lfs_tickets[ticket] = _LfsTicket(oid, size, now + LFS_TICKET_TTL_S)
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

    @api.post("/{namespace}/{name_git}/info/lfs/objects/batch")
    async def lfs_batch_model(request: Request, namespace: str, name_git: str) -> Response:
        return await _lfs_batch(request, "", namespace, name_git)

    @api.post("/datasets/{namespace}/{name_git}/info/lfs/objects/batch")
    async def lfs_batch_dataset(request: Request, namespace: str, name_git: str) -> Response:
        return await _lfs_batch(request, "datasets", namespace, name_git)

    @api.post("/spaces/{namespace}/{name_git}/info/lfs/objects/batch")
    async def lfs_batch_space(request: Request, namespace: str, name_git: str) -> Response:
        return await _lfs_batch(request, "spaces", namespace, name_git)

    def ticket_for(ticket: str) -> _LfsTicket:
        with tickets_lock:
            found = lfs_tickets.get(ticket)
        if found is None or found.expires < time.monotonic():
            raise NotFound("Unknown or expired LFS upload URL: ask the batch endpoint again.")
        return found

    @api.put("/api/lfs-upload/{ticket}")
    async def lfs_upload(request: Request, ticket: str) -> Response:
        expected = ticket_for(ticket)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != expected.size:
            raise BadRequest(f"Upload is {declared} bytes but the LFS object is {expected.size} bytes.")
        fd, temp_path = storage.new_temp_file()
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
            await run_in_threadpool(storage.adopt_blob, temp_path, expected.oid)
        finally:
            if temp_path.exists():
                temp_path.unlink()
        return JSONResponse({})

    @api.post("/api/lfs-verify/{ticket}")
    async def lfs_verify(request: Request, ticket: str) -> Response:
        tokens.require_user(request.headers.get("authorization"))
        expected = ticket_for(ticket)
        body = json_object(await read_json(request))
        if body.get("oid") != expected.oid or not storage.has_blob(expected.oid, expected.size):
            raise NotFound("The LFS object was not uploaded (or does not match its oid).")
        with tickets_lock:
            lfs_tickets.pop(ticket, None)
        return JSONResponse({"message": "verified"})

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

    def build_operations(operations: list[dict]) -> list[AddFile | DeleteFile | DeleteFolder]:
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

    @api.post("/api/{plural}/{namespace}/{name}/commit/{revision}")
    async def commit(request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
        repo, user = writable_repo(request, naming.repo_type_from_plural(plural), namespace, name)
        create_pr = flag(request.query_params.get("create_pr"))
        body = await read_body(request, settings.max_commit_body)
        header, raw_operations = parse_commit_lines(body)
        title = header.get("summary") or "Upload files"
        description = header.get("description") or ""
        parent_commit = header.get("parentCommit")
        if not isinstance(title, str) or not isinstance(description, str):
            raise BadRequest("The commit header's summary and description must be strings.")
        if parent_commit is not None and not isinstance(parent_commit, str):
            raise BadRequest("parentCommit must be a commit id.")
        operations = await run_in_threadpool(build_operations, raw_operations)
        pr_url = None
        if create_pr:
            start, _ = resolve(repo, revision)
            number = storage.next_pr_number(repo.repo_type, repo.repo_id)
            oid = await run_in_threadpool(
                lambda: storage.commit(repo.repo_type, repo.repo_id, str(number), operations, title=title,
                                       message=description, author=user, parent_commit=parent_commit,
                                       create_branch_from=start.oid, branch_kind="pr"))
            pr_url = f"{repo_url(request, repo)}/discussions/{number}"
        else:
            kind, branch = branch_target(repo, revision)
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

    # ---- downloads ---------------------------------------------------------------------------

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

    def stream_blob(path: Any, start: int, length: int) -> Iterator[bytes]:
        with open(path, "rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def _resolve_file(request: Request, repo_type: str, namespace: str, name: str, revision: str,
                      path: str) -> Response:
        repo = visible_repo(request, repo_type, namespace, name)
        commit, _ = resolve(repo, revision)
        file_path = naming.check_path(unquote(path))
        entry = commit.tree.get(file_path)
        if entry is None:
            raise EntryNotFound(f"{file_path} does not exist at revision {unquote(revision)}.",
                                extra={"repo_commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{file_path.rsplit("/", 1)[-1].encode("ascii", "replace").decode().replace(chr(34), "_")}"',
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
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type="application/octet-stream")
        return StreamingResponse(stream_blob(storage.blob_path(entry.sha256), start, length), status_code=status,
                                 headers=headers, media_type="application/octet-stream")

    for prefix, repo_type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):

        def make_route(bound_type: str):
            def resolve_file(request: Request, namespace: str, name: str, revision: str, path: str) -> Response:
                return _resolve_file(request, bound_type, namespace, name, revision, path)

            return resolve_file

        api.add_api_route(f"{prefix}/{{namespace}}/{{name}}/resolve/{{revision}}/{{path:path}}",
                          make_route(repo_type), methods=["GET", "HEAD"], name=f"resolve_{repo_type}")

    return RawPathApp(api)


MAX_HEADER_BYTES = 32 * 1024


class RawPathApp:
    """Routes on the raw request path so that percent-encoded slashes stay inside one path segment, and
    refuses oversized request headers with a clean 431 before any route sees them."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header_bytes = sum(len(key) + len(value) + 4 for key, value in scope.get("headers", []))
            if header_bytes + len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_HEADER_BYTES:
                message = f"Request headers too large: at most {MAX_HEADER_BYTES} bytes."
                response = JSONResponse({"error": message}, status_code=431, headers={"X-Error-Message": message})
                await response(scope, receive, send)
                return
            if scope.get("raw_path"):
                raw = scope["raw_path"].split(b"?", 1)[0].decode("latin-1")
                scope = dict(scope, path=raw)
        await self.app(scope, receive, send)
