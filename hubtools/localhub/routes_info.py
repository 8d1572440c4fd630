"""Read-only repo routes: info (at a revision), the file tree, paths-info, refs and commit history."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, HubContext, flag, json_object, parse_json, read_body
from hubtools.localhub.errors import BadRequest, EntryNotFound
from hubtools.localhub.storage import DEFAULT_BRANCH, Commit, FileEntry, Repo

router = APIRouter()


# ---- tree entries as JSON ------------------------------------------------------------------------


def tree_entry_json(path: str, entry: FileEntry) -> dict:
    data: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return data


def folder_json(commit: Commit, folder: str) -> dict:
    listing = "\n".join(f"{p}:{e.git_oid}" for p, e in commit.tree.under(folder))
    return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": folder}


def last_commit_json(hub: HubContext, repo: Repo, commit: Commit, path: str, is_folder: bool) -> dict:
    """The latest commit (from ``commit`` back) that changed ``path`` (a file, or anything under a folder)."""

    def snapshot(candidate: Commit) -> Any:
        if not is_folder:
            return candidate.tree.get(path)
        return [(p, e.git_oid) for p, e in candidate.tree.under(path)]

    history = hub.storage.history(repo.repo_type, repo.repo_id, commit)
    current = snapshot(commit)
    last = commit
    for older in history[1:]:
        if snapshot(older) != current:
            break
        last = older
    return {"id": last.oid, "title": last.title, "date": last.date}


def with_expand(hub: HubContext, repo: Repo, commit: Commit, item: dict, expand: bool) -> dict:
    if expand:
        item["lastCommit"] = last_commit_json(hub, repo, commit, item["path"], item["type"] == "directory")
    return item


# ---- info ----------------------------------------------------------------------------------------


def _info(hub: HubContext, request: Request, plural: str, namespace: str, name: str, revision: str) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    commit, _ = hub.resolve(repo, revision)
    return JSONResponse(hub.repo_json(request, repo, commit))


@router.get("/api/{plural}/{namespace}/{name}")
def repo_info(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    return _info(hub, request, plural, namespace, name, DEFAULT_BRANCH)


@router.get("/api/{plural}/{namespace}/{name}/revision/{revision}")
def repo_info_at(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    return _info(hub, request, plural, namespace, name, revision)


# ---- tree and paths-info -------------------------------------------------------------------------


def _tree(hub: HubContext, request: Request, plural: str, namespace: str, name: str, revision: str,
          path: str) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    commit, _ = hub.resolve(repo, revision)
    folder = unquote(path).strip("/")
    if folder:
        naming.check_path(folder)
    recursive = flag(request.query_params.get("recursive"))
    expand = flag(request.query_params.get("expand"))
    if folder and not commit.tree.is_folder(folder):
        raise EntryNotFound(f"{folder} does not exist at revision {unquote(revision)}.",
                            extra={"repo_commit": commit.oid})
    folders = commit.tree.folders(folder, recursive=recursive)
    items = [with_expand(hub, repo, commit, folder_json(commit, f), expand) for f in folders]
    items += [with_expand(hub, repo, commit, tree_entry_json(p, entry), expand)
              for p, entry in commit.tree.under(folder, recursive=recursive)]
    return JSONResponse(items)


@router.get("/api/{plural}/{namespace}/{name}/tree/{revision}")
def tree_root(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    return _tree(hub, request, plural, namespace, name, revision, "")


@router.get("/api/{plural}/{namespace}/{name}/tree/{revision}/{path:path}")
def tree_path(request: Request, plural: str, namespace: str, name: str, revision: str, path: str,
              hub: Hub) -> Response:
    return _tree(hub, request, plural, namespace, name, revision, path)


@router.post("/api/{plural}/{namespace}/{name}/paths-info/{revision}")
async def paths_info(request: Request, plural: str, namespace: str, name: str, revision: str,
                     hub: Hub) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    commit, _ = hub.resolve(repo, revision)
    body = await read_body(request, hub.settings.max_json_body)
    if "json" in request.headers.get("content-type", ""):
        data = json_object(parse_json(body or b"{}", "Request body"))
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
    items = []
    for raw in paths:
        path = raw.strip("/")
        if not path:
            continue
        naming.check_path(path)
        entry = commit.tree.get(path)
        if entry is not None:
            items.append(with_expand(hub, repo, commit, tree_entry_json(path, entry), expand))
        elif commit.tree.is_folder(path):
            items.append(with_expand(hub, repo, commit, folder_json(commit, path), expand))
    return JSONResponse(items)


# ---- refs and history ----------------------------------------------------------------------------


@router.get("/api/{plural}/{namespace}/{name}/refs")
def list_refs(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    refs = hub.storage.list_refs(repo.repo_type, repo.repo_id)

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


@router.get("/api/{plural}/{namespace}/{name}/commits/{revision}")
def list_commits(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    commit, _ = hub.resolve(repo, revision)
    items = []
    for item in hub.storage.history(repo.repo_type, repo.repo_id, commit):
        items.append({
            "id": item.oid,
            "title": item.title,
            "message": item.message,
            "authors": [{"user": item.author}],
            "date": item.date,
            "formatted": {"title": item.title, "message": item.message},
        })
    return JSONResponse(items)
