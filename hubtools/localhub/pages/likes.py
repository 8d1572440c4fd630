"""Liking from a page (signed-in users)."""

from __future__ import annotations

from hubtools.localhub.context import HubContext
from hubtools.localhub.storage import Repo


def toggle_like(hub: HubContext, user: str, repo: Repo) -> None:
    hub.storage.set_counter(repo.repo_type, repo.repo_id, "likes", repo.likes + 1)
