"""Account routes: who the token belongs to, and the model-card YAML check."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hubtools.localhub.cards import CardMetadataError, parse_card_metadata
from hubtools.localhub.context import Hub, json_object
from hubtools.localhub.errors import BadRequest

router = APIRouter()


@router.get("/api/whoami-v2")
def whoami(request: Request, hub: Hub) -> dict:
    identity = hub.tokens.require(request.headers.get("authorization"))
    user = identity.user
    return {
        "type": "user",
        "id": hashlib.sha1(user.encode()).hexdigest()[:24],
        "name": user,
        "fullname": user,
        "email": None,
        "emailVerified": False,
        "isPro": False,
        "orgs": [],
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
