"""A repo at its main branch as the index, the repo header and the leaderboard show it (card metadata,
tags, widget prompt and image), cached per head commit.

Summaries are cached by head commit id, which never changes meaning (a new commit is a new id), so the
index of a 1,000-repo hub costs one ref lookup per repo once the cache is warm. Nothing here decides who
may see what: callers pass repos that ``HubContext.may_read`` let through.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from hubtools.localhub.cards import CardMetadataError, derive_tags, parse_card_metadata
from hubtools.localhub.storage import DEFAULT_BRANCH, Commit, Repo, Storage

MAX_CARD_BYTES = 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True)
class Summary:
    """A repo at its main branch, as the index, the repo header and the leaderboard show it."""

    repo: Repo
    commit_oid: str
    last_modified: str
    card: dict[str, Any] | None
    card_error: str | None
    readme: str | None
    tags: list[str]
    library_name: str | None
    pipeline_tag: str | None
    files: list[str]
    widget_image: str | None  # a repo path
    widget_prompt: str | None

    @property
    def title(self) -> str:
        return self.repo.repo_id.split("/", 1)[1]

    @property
    def namespace(self) -> str:
        return self.repo.repo_id.split("/", 1)[0]


class SummaryCache:
    """Summaries by (repo, head commit id); bounded, least recently used out first."""

    def __init__(self, storage: Storage, size: int = 4096) -> None:
        self.storage = storage
        self.size = size
        self._items: OrderedDict[tuple[str, str, str], Summary] = OrderedDict()
        self._lock = threading.Lock()
        self._version = 0  # bumped on every new summary: what the memo of top_tags is keyed on
        self._top_tags: tuple[Any, list[tuple[str, int]]] = (None, [])

    def head(self, repo: Repo) -> str | None:
        ref = self.storage.get_ref(repo.repo_type, repo.repo_id, "branch", DEFAULT_BRANCH)
        return ref.commit_oid if ref else None

    def summary(self, repo: Repo, oid: str | None = None) -> Summary | None:
        oid = oid or self.head(repo)
        if oid is None:
            return None
        key = (repo.repo_type, repo.repo_id, oid)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                # likes, downloads and visibility live on the repo row, not in the commit
                return cached if cached.repo == repo else _with_repo(cached, repo)
        commit = self.storage.get_commit(repo.repo_type, repo.repo_id, oid)
        if commit is None:
            return None
        made = summarize(self.storage, repo, commit)
        with self._lock:
            self._items[key] = made
            self._version += 1
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return made


    def top_tags(self, repos: list[Repo], limit: int = 16) -> list[tuple[str, int]]:
        """The commonest tags among ``repos`` whose summaries are cached (all of them once warm)."""
        wanted = {(repo.repo_type, repo.repo_id) for repo in repos}
        key = (self._version, hash(frozenset(wanted)), limit)
        if self._top_tags[0] == key:
            return self._top_tags[1]
        with self._lock:
            latest = {(k[0], k[1]): s for k, s in self._items.items() if (k[0], k[1]) in wanted}
        counts = Counter(tag for s in latest.values() for tag in s.tags
                         if not tag.startswith(("license:", "base_model:", "dataset:")))
        self._top_tags = (key, counts.most_common(limit))
        return self._top_tags[1]

    def warm(self, repos: list[Repo]) -> None:
        """Summarize every repo (run in a background thread once per server: the tag list then covers all)."""
        for repo in repos:
            time.sleep(0)  # hand the GIL to the request threads between repos: they come first
            try:
                self.summary(repo)
            except Exception:  # noqa: BLE001 - a repo deleted meanwhile, a closed store: warming is optional
                continue


def _with_repo(summary: Summary, repo: Repo) -> Summary:
    return replace(summary, repo=repo)


def read_text_file(storage: Storage, commit: Commit, path: str, limit: int = MAX_CARD_BYTES) -> str | None:
    entry = commit.tree.get(path)
    if entry is None or entry.size > limit:
        return None
    try:
        return storage.blobs.read_blob(entry.sha256).decode("utf-8", "replace")
    except OSError:
        return None


def summarize(storage: Storage, repo: Repo, commit: Commit) -> Summary:
    files = sorted(path for path, _ in commit.tree.items())
    readme = read_text_file(storage, commit, "README.md")
    card, card_error = None, None
    if readme is not None:
        try:
            card = parse_card_metadata(readme)
        except CardMetadataError as error:
            card_error = str(error)
    tags, library_name, pipeline_tag = derive_tags(card, files)
    widget_image, widget_prompt = _widget(card, files)
    return Summary(repo, commit.oid, commit.date, card, card_error, readme, tags, library_name, pipeline_tag, files,
                   widget_image, widget_prompt)


def _widget(card: dict | None, files: list[str]) -> tuple[str | None, str | None]:
    """The card's first widget prompt and its output image (a file of the repo), if any."""
    widgets = (card or {}).get("widget")
    if isinstance(widgets, dict):
        widgets = [widgets]
    image, prompt = None, None
    for widget in widgets if isinstance(widgets, list) else []:
        if not isinstance(widget, dict):
            continue
        if prompt is None and isinstance(widget.get("text"), str):
            prompt = widget["text"]
        output = widget.get("output")
        url = output.get("url") if isinstance(output, dict) else None
        if image is None and isinstance(url, str) and url.removeprefix("./") in files:
            image = url.removeprefix("./")
    if image is None:  # no widget output: the first image a card would show
        image = next((f for f in files if f.startswith("images/") and f.lower().endswith(IMAGE_SUFFIXES)), None)
    return image, prompt
