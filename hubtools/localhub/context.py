"""What every route of the local hub shares: the ``HubContext`` (storage, tokens, settings, LFS upload
tickets) and the helpers that read requests, check access and shape a repo as JSON.

Path parameters arrive still percent-encoded (see ``app``): every helper here that takes one unquotes it,
then validates it with ``naming`` before it reaches storage.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from hubtools.localhub import naming
from hubtools.localhub.auth import Identity, Organizations, TokenBook, may_write, require_write
from hubtools.localhub.cards import CardMetadataError, derive_tags, parse_card_metadata
from hubtools.localhub.errors import (
    BadRequest,
    GatedRepoForbidden,
    GatedRepoUnauthorized,
    HubHTTPError,
    PayloadTooLarge,
    RepoMoved,
    RepoNotFound,
    RevisionNotFound,
)
from hubtools.localhub.sessions import SessionBook
from hubtools.localhub.storage import Commit, Repo, Storage

MAX_JSON_BODY = 16 * 1024 * 1024
# What a gated repo shows to everyone, as on the Hub: its card (and the LFS rules); every other file waits
# for access.
UNGATED_FILES = frozenset({"README.md", ".gitattributes"})
# The commit body is read line by line (one file per line), so its total size costs disk, not memory.
MAX_COMMIT_BODY = 16 * 1024**3
# One line carries one inline file: the Hub's regular files are at most 10 MB (13.4 MB in base64).
MAX_COMMIT_LINE = 16 * 1024 * 1024
# Text fields, as the Hub bounds them: a discussion's title, a commit's summary, a comment or description.
MAX_TITLE = 200
MAX_COMMIT_TITLE = 1000
MAX_TEXT = 64 * 1024
MAX_LFS_OBJECT = 64 * 1024**3


@dataclass
class HubSettings:
    max_json_body: int = MAX_JSON_BODY
    max_commit_body: int = MAX_COMMIT_BODY
    max_commit_line: int = MAX_COMMIT_LINE
    max_lfs_object: int = MAX_LFS_OBJECT


@dataclass
class LfsTicket:
    """An upload URL handed out by the LFS batch endpoint: the object it accepts, until ``expires``, and
    the repo that will own it."""

    oid: str
    size: int
    expires: float
    repo_type: str
    repo_id: str


@dataclass
class HubContext:
    """One per app (``app.state.hub``); routes get it with ``hub: Hub``."""

    storage: Storage
    tokens: TokenBook
    settings: HubSettings = field(default_factory=HubSettings)
    lfs_tickets: dict[str, LfsTicket] = field(default_factory=dict)
    tickets_lock: threading.Lock = field(default_factory=threading.Lock)
    organizations: Organizations = field(default_factory=Organizations)
    sessions: SessionBook = field(default_factory=SessionBook)  # the pages' signed-in browsers

    # ---- who is asking, and may they --------------------------------------------------------

    def identity(self, request: Request) -> Identity | None:
        """Who sent ``request`` (None: anonymous); 401 for a token nobody knows. API and pages both use it."""
        return self.tokens.resolve(request.headers.get("authorization"))

    def viewer(self, request: Request) -> str | None:
        identity = self.identity(request)
        return identity.user if identity else None

    def file_reader(self, request: Request) -> str | None:
        """Who downloads a file: the token's user; without a token, for a GET the hub's own pages make (an
        image of a card, a Download link), the signed-in browser's user, so private repos look right to
        those who may read them. The session cookie is SameSite=Strict, and a browser that says the request
        comes from another site is not trusted with it either."""
        identity = self.identity(request)
        if identity is not None or request.method != "GET":
            return identity.user if identity else None
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return None
        session = self.sessions.current(request, self.tokens)
        return session.user if session else None

    def require_writer(self, request: Request, namespace: str) -> str:
        """The user that may write ``namespace`` with this request's token: 401 without a token; 403 when the
        token's scope (read, or restricted to other namespaces) or the user's permission does not allow it."""
        identity = self.tokens.require(request.headers.get("authorization"))
        identity.check_may_write(namespace)
        self.require_write(identity.user, namespace)
        return identity.user

    def require_actor(self, request: Request) -> str:
        """The user behind a request that changes something outside their own namespaces (a like, a
        discussion, a pull request, an upload): 401 without a token, 403 for a read token. Once the repo
        is known, ``require_scope`` checks that the token may act on it."""
        identity = self.tokens.require(request.headers.get("authorization"))
        identity.check_may_act()
        return identity.user

    def require_scope(self, request: Request, namespace: str) -> None:
        """403 when the token is narrowed (``--org``) to other namespaces: a narrowed token acts only on the
        repos of its namespaces, community routes (likes, discussions, pull requests) included."""
        self.tokens.require(request.headers.get("authorization")).check_may_write(namespace)

    def may_write(self, user: str | None, namespace: str) -> bool:
        return may_write(user, namespace, self.organizations)

    def require_write(self, user: str, namespace: str) -> None:
        """403 unless ``user`` may write to ``namespace`` (theirs, or an organization they belong to).
        The user's permission only: routes call ``require_writer``, which checks the token's scope too."""
        require_write(user, namespace, self.organizations)

    def may_read(self, user: str | None, repo: Repo) -> bool:
        """Public repos are for everyone; a private one for whoever may write to its namespace."""
        return not repo.private or self.may_write(user, repo.namespace)

    def may_download(self, user: str | None, repo: Repo) -> bool:
        """The files of a gated repo are for its writers and the users whose access request was accepted."""
        return (not repo.gated or self.may_write(user, repo.namespace)
                or user is not None and self.storage.access.has_access(repo.repo_type, repo.repo_id, user))

    def require_download(self, user: str | None, repo: Repo, path: str, page_url: str) -> None:
        """As the Hub answers for a gated repo's file: 401 anonymous, 403 signed in without access."""
        if path in UNGATED_FILES or self.may_download(user, repo):
            return
        what = f"{repo.repo_type} {repo.repo_id}"
        if user is None:
            raise GatedRepoUnauthorized(f"Access to {what} is restricted. You must have access to it and be "
                                        "authenticated to access it. Please log in.")
        raise GatedRepoForbidden(f"Access to {what} is restricted and you are not in the authorized list. "
                                 f"Visit {page_url} to ask for access.")

    def visible_repo(self, request: Request, repo_type: str, namespace: str, name: str) -> Repo:
        # a wrong token is 401 on every route, public repo or not
        return self.repo_visible_to(self.viewer(request), repo_type, namespace, name)

    def repo_visible_to(self, user: str | None, repo_type: str, namespace: str, name: str) -> Repo:
        """The repo if ``user`` may read it (``may_read``: the one rule, for the API and the pages), else
        RepoNotFound, the same answer as for a repo that does not exist, so private ones do not leak."""
        repo_id = naming.check_repo_id(unquote(namespace), unquote(name))
        repo = self.storage.get_repo(repo_type, repo_id)
        if repo is None or not self.may_read(user, repo):
            moved_to = self.storage.redirect_of(repo_type, repo_id) if repo is None else None
            target = self.storage.get_repo(repo_type, moved_to) if moved_to is not None else None
            if target is not None and self.may_read(user, target):  # never reveal a private repo's new name
                raise RepoMoved(f"Repository {repo_id} moved to {moved_to}.", extra={"moved_from": repo_id, "moved_to": moved_to})
            raise RepoNotFound(f"Repository {repo_id} not found (or private and you are not its owner).")
        return repo

    def writable_repo(self, request: Request, repo_type: str, namespace: str, name: str) -> tuple[Repo, str]:
        self.tokens.require(request.headers.get("authorization"))  # 401 before anything about the repo
        repo = self.visible_repo(request, repo_type, namespace, name)
        user = self.require_writer(request, repo.namespace)
        return repo, user

    def committable_repo(self, request: Request, repo_type: str, namespace: str, name: str, revision: str,
                         create_pr: bool) -> tuple[Repo, str]:
        """The repo and user for an upload or commit to ``revision``: writers commit anywhere; anyone who
        can read a repo may open a pull request on it and commit to the pull requests they opened (that is
        how outsiders contribute on the Hub)."""
        user = self.require_actor(request)
        repo = self.visible_repo(request, repo_type, namespace, name)
        self.require_scope(request, repo.namespace)
        if create_pr:
            return repo, user
        if self.may_write(user, repo.namespace):
            self.require_writer(request, repo.namespace)  # and the token's namespace restriction
            return repo, user
            return repo, user
        kind, ref_name = self.storage.split_revision(unquote(revision))
        if kind == "pr" and ref_name.isdigit():
            try:
                pr = self.storage.community.get_discussion(repo.repo_type, repo.repo_id, int(ref_name))
            except HubHTTPError:
                pr = None
            if pr is not None and pr.author == user and pr.status in ("open", "draft"):
                return repo, user
        self.require_writer(request, repo.namespace)
        return repo, user

    # ---- request bodies ----------------------------------------------------------------------

    async def read_json(self, request: Request) -> Any:
        body = await read_body(request, self.settings.max_json_body)
        if not body:
            return {}
        return parse_json(body, "Request body")

    # ---- revisions ---------------------------------------------------------------------------

    def resolve(self, repo: Repo, revision: str) -> tuple[Commit, Any]:
        return self.storage.resolve(repo.repo_type, repo.repo_id, unquote(revision))

    def branch_target(self, repo: Repo, revision: str) -> tuple[str, str]:
        """The (kind, name) of the ref a commit to ``revision`` moves: a branch or an open PR ref."""
        kind, name = self.storage.split_revision(unquote(revision))
        kind = kind or "branch"
        if kind == "tag":
            raise BadRequest("Cannot commit to a tag: commit to a branch.")
        if self.storage.get_ref(repo.repo_type, repo.repo_id, kind, name) is None:
            raise RevisionNotFound(f"Invalid rev id: {name} is not a branch (create it first with create_branch).")
        return kind, name

    # ---- a repo as the Hub shows it ----------------------------------------------------------

    def card_of(self, commit: Commit) -> dict | None:
        entry = commit.tree.get("README.md")
        if entry is None or entry.size > 1024 * 1024:
            return None
        try:
            return parse_card_metadata(self.storage.blobs.read_blob(entry.sha256).decode("utf-8", "replace"))
        except (CardMetadataError, OSError):
            return None

    def repo_json(self, request: Request, repo: Repo, commit: Commit) -> dict:
        card = self.card_of(commit)
        files = commit.tree.items()
        tags, library_name, pipeline_tag = derive_tags(card, [path for path, _ in files])
        siblings = []
        for path, entry in files:
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
            "gated": repo.gated or False,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "tags": tags,
            "siblings": siblings,
            "cardData": card,
            "usedStorage": sum(entry.size for _, entry in files),
        }
        if repo.repo_type == "model":
            data["modelId"] = repo.repo_id
            data["library_name"] = library_name
            data["pipeline_tag"] = pipeline_tag
        if repo.repo_type == "space":
            data["sdk"] = repo.sdk or (card or {}).get("sdk")
        return data


async def get_hub(request: Request) -> HubContext:
    # async, so FastAPI calls it on the event loop rather than sending it to the thread pool
    return request.app.state.hub


Hub = Annotated[HubContext, Depends(get_hub)]


# ---- helpers that need no context ------------------------------------------------------------


def error_response(status: int, message: str, code: str | None = None, extra: dict | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    header_message = message.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:500]
    all_headers = {"X-Error-Message": header_message, **(headers or {})}
    if code:
        all_headers["X-Error-Code"] = code
    return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=all_headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def repo_url(request: Request, repo: Repo) -> str:
    return f"{base_url(request)}/{naming.URL_PREFIXES[repo.repo_type]}{repo.repo_id}"


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


def parse_json(text: bytes, what: str) -> Any:
    """JSON from a client: 400 (never a 500 with a traceback) for bad JSON, and for nesting deeper than
    the parser's recursion limit, which it reaches after about a thousand levels: linear in the input."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"{what} is not valid JSON.") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply.") from None


def check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise BadRequest(f"{what} is too long: at most {limit} characters.")
    return value


def json_object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise BadRequest("Request body must be a JSON object.")
    return value


def flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")
