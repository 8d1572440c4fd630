"""The hackathon boards: ``hubtools.hackathon``'s grouping and order and its rule check, over the hub's
repos (a submission's files are read from the blob store instead of downloaded)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtools.localhub.pages.summaries import Summary, SummaryCache
from hubtools.localhub.storage import Repo, Storage

@dataclass
class Entry:
    rank: int
    summary: Summary
    rules: list[Any]  # hackathon.RuleResult

    @property
    def failed(self) -> list[Any]:
        return [rule for rule in self.rules if not rule.passed]


@dataclass
class Board:
    theme: str
    title: str
    description: str
    entries: list[Entry]


_rules_cache: OrderedDict[tuple[str, str, bool], list[Any]] = OrderedDict()
_rules_lock = threading.Lock()


def hackathon_boards(storage: Storage, cache: SummaryCache, repos: list[Repo]) -> list[Board]:
    """The leaderboard of ``hubtools.hackathon`` (its grouping and order, its rule check) over the repos."""
    from types import SimpleNamespace

    from hubtools import hackathon

    summaries = {}
    for repo in repos:
        summary = cache.summary(repo)
        if summary is not None and hackathon.HACKATHON_TAG in summary.tags:
            summaries[repo.repo_id] = summary
    models = [SimpleNamespace(id=s.repo.repo_id, likes=s.repo.likes, downloads=s.repo.downloads, tags=s.tags)
              for s in summaries.values()]
    themes = {theme.name: theme for theme in hackathon.load_themes()}
    boards = []
    for board in hackathon.group_by_theme(models):
        theme = themes.get(board.theme)
        entries = [Entry(e.rank, summaries[e.repo_id], entry_rules(storage, summaries[e.repo_id]))
                   for e in board.entries]
        boards.append(Board(board.theme, board.title, theme.description if theme else "", entries))
    return boards


def entry_rules(storage: Storage, summary: Summary) -> list[Any]:
    from hubtools import hackathon

    key = (summary.repo.repo_type + "/" + summary.repo.repo_id, summary.commit_oid, summary.repo.private)
    with _rules_lock:
        cached = _rules_cache.get(key)
    if cached is not None:
        return cached
    commit = storage.get_commit(summary.repo.repo_type, summary.repo.repo_id, summary.commit_oid)
    tree = dict(commit.tree.items()) if commit else {}

    def fetch(filename: str) -> Path:
        return storage.blobs.blob_path(tree[filename].sha256)

    submission = hackathon.submission_from_readme(summary.repo.repo_id, summary.repo.private, summary.files,
                                                  summary.readme, fetch)
    rules = hackathon.check_rules(submission)
    with _rules_lock:
        _rules_cache[key] = rules
        while len(_rules_cache) > 4096:
            _rules_cache.popitem(last=False)
    return rules
