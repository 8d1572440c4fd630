"""The index: one page of repos, searched, filtered by tag, sorted and paged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hubtools.localhub.pages.summaries import Summary, SummaryCache
from hubtools.localhub.storage import Repo

SORTS = {"likes": "most likes", "downloads": "most downloads", "updated": "recently updated"}


@dataclass
class IndexPage:
    items: list[Summary]
    total: int
    page: int
    pages: int
    top_tags: list[tuple[str, int]]


def index_page(cache: SummaryCache, repos: list[Repo], *, search: str, tag: str, sort: str, page: int,
               per_page: int = 24) -> IndexPage:
    """One page of the index. Sorting by likes or downloads with no tag filter needs the cards of the shown
    repos only (the repo rows hold the counters), so even a cold cache renders it quickly; a tag filter or
    "recently updated" reads every card once (cached afterwards)."""
    needles = [word for word in search.lower().split() if word]
    if needles:
        repos = [repo for repo in repos if all(n in repo.repo_id.lower() for n in needles)]
    if tag or sort == "updated":
        found = [s for s in (cache.summary(repo) for repo in repos) if s is not None]
        if tag:
            found = [s for s in found if tag in s.tags]
        if sort == "updated":
            found.sort(key=lambda s: s.repo.repo_id)
            found.sort(key=lambda s: s.last_modified, reverse=True)
        else:
            found.sort(key=_counter_key(sort, lambda s: s.repo))
        total, window = len(found), found
    else:
        repos = sorted(repos, key=_counter_key(sort, lambda repo: repo))
        total, window = len(repos), repos
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    shown = window[(page - 1) * per_page : page * per_page]
    items = [item if isinstance(item, Summary) else cache.summary(item) for item in shown]
    return IndexPage([item for item in items if item is not None], total, page, pages, cache.top_tags(repos))


def _counter_key(sort: str, repo_of: Any) -> Any:
    column = "downloads" if sort == "downloads" else "likes"
    return lambda item: (-getattr(repo_of(item), column), repo_of(item).repo_id)
