"""Discussions and pull requests: open, list, read, comment, rename, close/reopen, merge.

They share one numbering per repo. A pull request is a ref ``refs/pr/N`` started from the head of its
target branch; commits to it show in its thread, and merging applies its changes on the target in one
commit (409 with ``filesWithConflicts`` when the target changed the same files). Anyone who can read a
repo may open a discussion or a pull request and comment; the author or a writer may rename and close
it; only a writer merges.
"""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hubtools.localhub import naming
from hubtools.localhub.context import MAX_TEXT, MAX_TITLE, Hub, HubContext, check_text, json_object
from hubtools.localhub.diffs import git_diff, pull_request_changes
from hubtools.localhub.errors import BadRequest, Forbidden
from hubtools.localhub.storage import DEFAULT_BRANCH, Repo
from hubtools.localhub.community import Discussion, DiscussionEvent, comment_data

router = APIRouter()

PAGE_SIZE = 50
STATUSES = ("open", "closed", "merged", "draft")


def _user_json(name: str) -> dict:
    return {"name": name, "fullname": name, "type": "user", "avatarUrl": None, "isOwner": False}


def event_json(event: DiscussionEvent) -> dict:
    return {"id": f"{event.id:024x}", "type": event.type, "createdAt": event.created_at,
            "author": _user_json(event.author), "data": event.data}


def discussion_json(repo: Repo, discussion: Discussion) -> dict:
    return {
        "num": discussion.num,
        "title": discussion.title,
        "status": discussion.status,
        "createdAt": discussion.created_at,
        "isPullRequest": bool(discussion.is_pr),
        "author": _user_json(discussion.author),
        "repo": {"name": repo.repo_id, "type": repo.repo_type},
        "numComments": 0,
        "pinned": False,
    }


def _discussion_repo(hub: HubContext, request: Request, plural: str, namespace: str, name: str) -> Repo:
    return hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)


def _num(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise BadRequest(f"Invalid discussion number {value!r}.")
    return int(value)


def _user(hub: HubContext, request: Request) -> str:
    return hub.require_actor(request)


def _details_json(hub: HubContext, repo: Repo, discussion: Discussion) -> dict:
    data = discussion_json(repo, discussion)
    events = hub.storage.community.discussion_events(repo.repo_type, repo.repo_id, discussion.num)
    data["events"] = [event_json(event) for event in events]
    data["numComments"] = sum(1 for event in events if event.type == "comment")
    if discussion.is_pr:
        head = hub.storage.get_ref(repo.repo_type, repo.repo_id, "pr", str(discussion.num))
        data["changes"] = {"base": f"refs/heads/{discussion.target or DEFAULT_BRANCH}",
                           "mergeCommitId": discussion.merge_oid,
                           "headCommitId": head.commit_oid if head else None}
        data["filesWithConflicts"] = []
        data["diff"] = git_diff(pull_request_changes(hub.storage, repo.repo_type, repo.repo_id, discussion.base_oid,
                                                     head.commit_oid if head else None))
    return data


@router.get("/api/{plural}/{namespace}/{name}/discussions")
def list_discussions(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    repo = _discussion_repo(hub, request, plural, namespace, name)
    params = request.query_params
    kind, status, author = params.get("type", "all"), params.get("status", "all"), params.get("author")
    try:
        page = int(params.get("p", "0"))
    except ValueError:
        raise BadRequest("p must be a page number.") from None
    found = [
        d for d in hub.storage.community.list_discussions(repo.repo_type, repo.repo_id)
        if (kind == "all" or (kind == "pull_request") == bool(d.is_pr))
        and (status == "all" or d.status == status)
        and (author is None or d.author == author)
    ]
    start = max(page, 0) * PAGE_SIZE
    return JSONResponse({"discussions": [discussion_json(repo, d) for d in found[start:start + PAGE_SIZE]],
                         "count": len(found), "start": start,
                         "numClosedDiscussions": sum(1 for d in found if d.status == "closed")})


@router.post("/api/{plural}/{namespace}/{name}/discussions")
async def create_discussion(request: Request, plural: str, namespace: str, name: str, hub: Hub) -> Response:
    user = _user(hub, request)
    repo = _discussion_repo(hub, request, plural, namespace, name)
    hub.require_scope(request, repo.namespace)
    body = json_object(await hub.read_json(request))
    title, description = body.get("title"), body.get("description") or ""
    if not isinstance(title, str) or len(title.strip()) < 3 or not isinstance(description, str):
        raise BadRequest("A discussion needs a 'title' of at least 3 characters and a string 'description'.")
    check_text(title.strip(), "The title", MAX_TITLE)
    check_text(description, "The description", MAX_TEXT)
    pull_request = bool(body.get("pullRequest"))
    num = await run_in_threadpool(lambda: hub.storage.community.create_discussion(
        repo.repo_type, repo.repo_id, title=title.strip(), author=user, description=description,
        pull_request=pull_request))
    return JSONResponse({"num": num, "pullRequest": pull_request,
                         "url": f"{repo.repo_id}/discussions/{num}"})


@router.get("/api/{plural}/{namespace}/{name}/discussions/{num}")
def discussion_details(request: Request, plural: str, namespace: str, name: str, num: str, hub: Hub) -> Response:
    repo = _discussion_repo(hub, request, plural, namespace, name)
    discussion = hub.storage.community.get_discussion(repo.repo_type, repo.repo_id, _num(num))
    return JSONResponse(_details_json(hub, repo, discussion))


async def _change(hub: HubContext, request: Request, plural: str, namespace: str, name: str,
                  num: str) -> tuple[Repo, Discussion, str, dict]:
    user = _user(hub, request)
    repo = _discussion_repo(hub, request, plural, namespace, name)
    hub.require_scope(request, repo.namespace)
    discussion = hub.storage.community.get_discussion(repo.repo_type, repo.repo_id, _num(num))
    body = await hub.read_json(request)
    return repo, discussion, user, json_object(body)


def _require_author_or_writer(hub: HubContext, user: str, repo: Repo, discussion: Discussion) -> None:
    if user != discussion.author and not hub.may_write(user, repo.namespace):
        raise Forbidden(f"Only the author of #{discussion.num} or a writer of {repo.repo_id} may do this.")


async def _add_comment(hub: HubContext, repo: Repo, discussion: Discussion, user: str, text: str) -> DiscussionEvent:
    return await run_in_threadpool(lambda: hub.storage.community.add_discussion_event(
        repo.repo_type, repo.repo_id, discussion.num, "comment", user, comment_data(text)))


@router.post("/api/{plural}/{namespace}/{name}/discussions/{num}/comment")
async def comment(request: Request, plural: str, namespace: str, name: str, num: str, hub: Hub) -> Response:
    repo, discussion, user, body = await _change(hub, request, plural, namespace, name, num)
    text = body.get("comment")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("A comment needs a non-empty 'comment'.")
    check_text(text, "The comment", MAX_TEXT)
    event = await _add_comment(hub, repo, discussion, user, text)
    return JSONResponse({"newMessage": event_json(event)})


@router.post("/api/{plural}/{namespace}/{name}/discussions/{num}/title")
async def rename(request: Request, plural: str, namespace: str, name: str, num: str, hub: Hub) -> Response:
    repo, discussion, user, body = await _change(hub, request, plural, namespace, name, num)
    _require_author_or_writer(hub, user, repo, discussion)
    title = body.get("title")
    if not isinstance(title, str) or len(title.strip()) < 3:
        raise BadRequest("A title needs at least 3 characters.")
    check_text(title.strip(), "The title", MAX_TITLE)
    event = await run_in_threadpool(lambda: hub.storage.community.add_discussion_event(
        repo.repo_type, repo.repo_id, discussion.num, "title-change", user,
        {"from": discussion.title, "to": title.strip()}, title=title.strip()))
    return JSONResponse({"newTitle": event_json(event)})


@router.post("/api/{plural}/{namespace}/{name}/discussions/{num}/status")
async def change_status(request: Request, plural: str, namespace: str, name: str, num: str, hub: Hub) -> Response:
    repo, discussion, user, body = await _change(hub, request, plural, namespace, name, num)
    _require_author_or_writer(hub, user, repo, discussion)
    status = body.get("status")
    if status not in ("open", "closed"):
        raise BadRequest("status must be 'open' or 'closed'.")
    if discussion.status == "merged":
        raise BadRequest(f"#{discussion.num} is merged: its status cannot change.")
    comment_text = body.get("comment")
    if isinstance(comment_text, str) and comment_text.strip():
        check_text(comment_text, "The comment", MAX_TEXT)
        await _add_comment(hub, repo, discussion, user, comment_text.strip())
    event = await run_in_threadpool(lambda: hub.storage.community.add_discussion_event(
        repo.repo_type, repo.repo_id, discussion.num, "status-change", user, {"status": status}, status=status))
    return JSONResponse({"newStatus": event_json(event)})


@router.post("/api/{plural}/{namespace}/{name}/discussions/{num}/merge")
async def merge(request: Request, plural: str, namespace: str, name: str, num: str, hub: Hub) -> Response:
    repo, discussion, user, body = await _change(hub, request, plural, namespace, name, num)
    hub.require_writer(request, repo.namespace)
    comment_text = body.get("comment") if isinstance(body.get("comment"), str) else None
    if comment_text is not None:
        check_text(comment_text, "The comment", MAX_TEXT)
    oid = await run_in_threadpool(lambda: hub.storage.merge_pull_request(
        repo.repo_type, repo.repo_id, discussion.num, author=user, comment=comment_text))
    return JSONResponse({"success": True, "mergeCommitId": oid})


