"""Liking from a page (signed-in users), through the same storage calls as the API's like/unlike."""

from __future__ import annotations

from hubtools.localhub.context import HubContext
from hubtools.localhub.storage import Repo


def likes_it(hub: HubContext, user: str | None, repo: Repo) -> bool:
    return user is not None and user in hub.storage.community.likers(repo.repo_type, repo.repo_id)


def toggle_like(hub: HubContext, user: str, repo: Repo) -> bool:
    """Like the repo, or unlike it when ``user`` already does; returns whether they like it now."""
    liked = not likes_it(hub, user, repo)
    hub.storage.community.like(repo.repo_type, repo.repo_id, user, liked)
    return liked
