"""Account routes: who the token belongs to (with their organizations), organizations and users as
``HfApi`` shows them, and the model-card YAML check."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hubtools.localhub.cards import CardMetadataError, parse_card_metadata
from hubtools.localhub.context import Hub, HubContext, json_object
from hubtools.localhub.errors import BadRequest, NotFound

router = APIRouter()


def _id(kind: str, name: str) -> str:
    return hashlib.sha1(f"{kind}:{name}".encode()).hexdigest()[:24]


def org_json(name: str) -> dict:
    """An organization as whoami's ``orgs`` lists it on the Hub (members write: ``roleInOrg`` is write)."""
    return {"type": "org", "id": _id("org", name), "name": name, "fullname": name, "email": None,
            "canPay": False, "avatarUrl": None, "roleInOrg": "write", "isEnterprise": False}


def user_json(hub: HubContext, name: str) -> dict:
    return {"type": "user", "user": name, "fullname": name, "avatarUrl": None, "isPro": False,
            "orgs": [{"name": org, "fullname": org, "avatarUrl": None} for org in hub.organizations.of_user(name)]}


@router.get("/api/organizations/{name}/members")
def organization_members(request: Request, name: str, hub: Hub) -> Response:
    hub.viewer(request)
    if name not in hub.organizations:
        raise NotFound(f"Organization {name} not found.")
    return JSONResponse([user_json(hub, user) for user in sorted(hub.organizations.members_of(name))])


@router.get("/api/organizations/{name}/overview")
def organization_overview(request: Request, name: str, hub: Hub) -> Response:
    hub.viewer(request)
    if name not in hub.organizations:
        raise NotFound(f"Organization {name} not found.")
    return JSONResponse({"name": name, "fullname": name, "avatarUrl": None, "isVerified": False,
                         "numUsers": len(hub.organizations.members_of(name)), "type": "org"})


@router.get("/api/whoami-v2")
def whoami(request: Request, hub: Hub) -> dict:
    identity = hub.tokens.require(request.headers.get("authorization"))
    user = identity.user
    return {
        "type": "user",
        "id": _id("user", user),
        "name": user,
        "fullname": user,
        "email": None,
        "emailVerified": False,
        "isPro": False,
        "orgs": [org_json(org) for org in hub.organizations.of_user(user)],
        "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": identity.role}},
    }


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request, hub: Hub) -> Response:
    body = json_object(await hub.read_json(request))
    content = body.get("content")
    if not isinstance(content, str):
        raise BadRequest("validate-yaml needs a JSON body with a string 'content'.")
    try:
        parse_card_metadata(content)
    except CardMetadataError as error:
        raise BadRequest(str(error)) from None
    return JSONResponse({"errors": [], "warnings": []})
