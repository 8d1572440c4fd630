"""Server-rendered HTML pages of the local hub (see ``routes_pages``); ``router`` goes after the API's."""

from hubtools.localhub.pages.routes_pages import router

__all__ = ["router"]
