"""How the pages name and show things: the page URLs of repos and files, sizes, card values as lists."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hubtools.formatting import as_text_list as as_list  # the pages show card values as text
from hubtools.formatting import human_size  # noqa: F401 (the templates' name for it)
from hubtools.localhub import naming
from hubtools.localhub.errors import BadRequest
from hubtools.localhub.naming import URL_PREFIXES
from hubtools.localhub.storage import Repo


def repo_path(repo: Repo) -> str:
    """The repo's page path: ``/ns/name``, ``/datasets/ns/name`` or ``/spaces/ns/name``."""
    return f"/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"


def file_url(repo: Repo, mode: str, revision: str, path: str = "") -> str:
    url = f"{repo_path(repo)}/{mode}/{quote(revision, safe='')}"
    return f"{url}/{quote(path)}" if path else url


def repo_links(value: Any, repo_type: str) -> list[tuple[str, str | None]]:
    """A card's ``base_model`` or ``datasets`` as (text, link on this hub): a link only for a valid repo id,
    so a card's ``//evil.example/x`` or ``https://...`` shows as text and never leads off the hub."""
    links = []
    for text in as_list(value):
        namespace, _, name = text.partition("/")
        try:
            repo_id = naming.check_repo_id(namespace, name)
        except BadRequest:
            links.append((text, None))
            continue
        links.append((text, f"/{URL_PREFIXES[repo_type]}{repo_id}"))
    return links
