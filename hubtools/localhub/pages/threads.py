"""Discussions and pull requests as their pages show them: the list with its filters, one thread with its
comments (Markdown, sanitised like a card), status and title changes and commits, and for a pull request
its changes file by file (text hunks highlighted by Pygments' diff lexer; LFS and binary files as their
size and sha256 before and after)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubtools.localhub.context import HubContext
from hubtools.localhub.diffs import FileChange, pull_request_changes
from hubtools.localhub.pages.formatting import repo_path
from hubtools.localhub.pages.markdown import highlight_code, render_card
from hubtools.localhub.storage import DEFAULT_BRANCH, Repo

FILTERS = (("all", "All"), ("discussion", "Discussions"), ("pull_request", "Pull requests"))
STATUS_FILTERS = (("open", "Open"), ("closed", "Closed"), ("all", "All"))


@dataclass
class ListedThread:
    num: int
    title: str
    author: str
    status: str
    is_pr: bool
    created_at: str


def list_threads(hub: HubContext, repo: Repo, kind: str, status: str) -> list[ListedThread]:
    """``status`` "open" takes drafts too, "closed" merged ones too (as the Hub's tabs group them)."""
    shown = []
    for item in hub.storage.community.list_discussions(repo.repo_type, repo.repo_id):
        if kind != "all" and (kind == "pull_request") != bool(item.is_pr):
            continue
        is_open = item.status in ("open", "draft")
        if (status == "open" and not is_open) or (status == "closed" and is_open):
            continue
        shown.append(ListedThread(item.num, item.title, item.author, item.status, bool(item.is_pr), item.created_at))
    return shown


@dataclass
class ShownEvent:
    type: str
    author: str
    created_at: str
    html: str = ""  # comments: sanitised Markdown
    data: dict = field(default_factory=dict)


@dataclass
class ShownChange:
    change: FileChange
    diff_html: str | None  # highlighted hunks; None for binary and LFS files


@dataclass
class Thread:
    discussion: Any  # community.Discussion
    events: list[ShownEvent]
    changes: list[ShownChange]
    head_oid: str | None
    may_change_status: bool  # the author or a writer: close and reopen
    may_merge: bool  # a writer, on an open pull request

    @property
    def is_open(self) -> bool:
        return self.discussion.status in ("open", "draft")


def thread(hub: HubContext, repo: Repo, num: int, user: str | None) -> Thread:
    discussion = hub.storage.community.get_discussion(repo.repo_type, repo.repo_id, num)
    events = []
    for event in hub.storage.community.discussion_events(repo.repo_type, repo.repo_id, num):
        html = ""
        if event.type == "comment":
            raw = ((event.data.get("latest") or {}).get("raw") or "") if isinstance(event.data, dict) else ""
            html = render_card(raw, repo_path=repo_path(repo), revision=DEFAULT_BRANCH)
        events.append(ShownEvent(event.type, event.author, event.created_at, html, event.data))
    changes, head_oid = [], None
    if discussion.is_pr:
        head = hub.storage.get_ref(repo.repo_type, repo.repo_id, "pr", str(num))
        head_oid = head.commit_oid if head else None
        for change in pull_request_changes(hub.storage, repo.repo_type, repo.repo_id, discussion.base_oid, head_oid):
            diff_html = None if change.binary or not change.hunks else highlight_code(change.hunks, "diff")
            changes.append(ShownChange(change, diff_html))
    writer = hub.may_write(user, repo.namespace)
    is_open = discussion.status in ("open", "draft")
    return Thread(discussion, events, changes, head_oid,
                  may_change_status=user is not None and discussion.status != "merged" and (writer or user == discussion.author),
                  may_merge=writer and bool(discussion.is_pr) and is_open)
