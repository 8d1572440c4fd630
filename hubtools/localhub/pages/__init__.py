"""Server-rendered HTML pages of the local hub, one route module per page family; ``router`` goes after
the API's (every API path wins over ``/{namespace}/{name}/...``)."""

from fastapi import APIRouter

from hubtools.localhub.pages import routes_discussions, routes_people, routes_repo, routes_site
from hubtools.localhub.pages.render import not_found_page, wants_html

router = APIRouter()
# In this order: the site's fixed paths (/login, /hackathon) before the people's /{name} that would match them.
for _family in (routes_site, routes_people, routes_repo, routes_discussions):
    router.include_router(_family.router)

__all__ = ["not_found_page", "router", "wants_html"]
