"""A user's or an organization's page: their repos by type, the repos a user likes, an organization's
members and a user's organizations. Only repos the viewer may read are listed (``HubContext.may_read``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hubtools.localhub import naming
from hubtools.localhub.context import HubContext
from hubtools.localhub.errors import BadRequest, NotFound
from hubtools.localhub.pages.summaries import Summary, SummaryCache

SECTIONS = (("model", "Models"), ("dataset", "Datasets"), ("space", "Spaces"))


@dataclass
class Profile:
    name: str
    is_org: bool
    repos: dict[str, list[Summary]] = field(default_factory=dict)  # repo type -> newest first
    likes: list[Summary] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # organizations
    organizations: list[str] = field(default_factory=list)  # users

    @property
    def repo_count(self) -> int:
        return sum(len(items) for items in self.repos.values())


def profile(hub: HubContext, cache: SummaryCache, name: str, viewer: str | None) -> Profile:
    """The page of ``name``; NotFound when it is neither an organization nor a user the hub knows of
    (someone with repos, likes or an organization)."""
    try:
        naming.check_name_part(name, "namespace")
    except BadRequest:
        raise NotFound(f"{name} not found.") from None
    is_org = name in hub.organizations
    owned = [repo for repo in hub.storage.list_repos() if repo.namespace == name]
    liked = [] if is_org else hub.storage.community.liked_by(name)
    organizations = [] if is_org else hub.organizations.of_user(name)
    if not (is_org or owned or liked or organizations):
        raise NotFound(f"{name} not found.")
    found = Profile(name, is_org, members=sorted(hub.organizations.members_of(name)) if is_org else [],
                    organizations=organizations)
    for repo_type, _ in SECTIONS:
        summaries = [cache.summary(repo) for repo in owned if repo.repo_type == repo_type and hub.may_read(viewer, repo)]
        found.repos[repo_type] = sorted((s for s in summaries if s is not None), key=lambda s: s.last_modified,
                                        reverse=True)
    for repo_type, repo_id, _ in liked:
        repo = hub.storage.get_repo(repo_type, repo_id)
        summary = cache.summary(repo) if repo is not None and hub.may_read(viewer, repo) else None
        if summary is not None:
            found.likes.append(summary)
    return found
