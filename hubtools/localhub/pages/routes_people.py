"""User and organization pages: ``/{name}``, as on the Hub."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from hubtools.localhub.pages import people
from hubtools.localhub.pages.render import hub_of, page, page_state, render, viewer

router = APIRouter()


def _profile_page(request: Request, name: str) -> HTMLResponse:
    found = people.profile(hub_of(request), page_state(request).summaries, name, viewer(request))
    return render(request, "profile.html.j2", profile=found, sections=people.SECTIONS)


@router.get("/{name}")
async def profile_page(request: Request, name: str) -> Response:
    return await page(request, _profile_page, name)
