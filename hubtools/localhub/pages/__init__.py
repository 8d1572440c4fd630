"""Server-rendered HTML pages of the local hub, one route module per page family; ``router`` goes after
the API's (every API path wins over ``/{namespace}/{name}/...``)."""

from fastapi import APIRouter

from hubtools.localhub.pages import routes_repo, routes_site

router = APIRouter()
# In this order: the site's fixed paths (/login, /hackathon) before the repo paths that could match them.
for _family in (routes_site, routes_repo):
    router.include_router(_family.router)

__all__ = ["router"]
