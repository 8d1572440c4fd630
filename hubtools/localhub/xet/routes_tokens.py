"""The hub's Xet token endpoints (``xet-write-token`` / ``xet-read-token``): who may write or read the repo,
as for any upload or download, gets a short-lived CAS token for that repo and the ``casUrl`` of this hub."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hubtools.localhub import naming
from hubtools.localhub.context import Hub, base_url, flag, repo_url
from hubtools.localhub.xet.routes_cas import CAS_PREFIX, token_answer
from hubtools.localhub.xet.store import XetStore

router = APIRouter()


def xet_store(request: Request) -> XetStore:
    return request.app.state.xet


@router.get("/api/{plural}/{namespace}/{name}/xet-write-token/{revision}")
def xet_write_token(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    repo, user = hub.committable_repo(request, naming.repo_type_from_plural(plural), namespace, name, revision,
                                      flag(request.query_params.get("create_pr")))
    token, expires = xet_store(request).issue(repo.repo_type, repo.repo_id, user, "write")
    return token_answer(base_url(request) + CAS_PREFIX, token, expires)


@router.get("/api/{plural}/{namespace}/{name}/xet-read-token/{revision}")
def xet_read_token(request: Request, plural: str, namespace: str, name: str, revision: str, hub: Hub) -> Response:
    repo = hub.visible_repo(request, naming.repo_type_from_plural(plural), namespace, name)
    user = hub.viewer(request)
    hub.require_download(user, repo, "", repo_url(request, repo))  # a gated repo's files wait for access
    token, expires = xet_store(request).issue(repo.repo_type, repo.repo_id, user, "read")
    return token_answer(base_url(request) + CAS_PREFIX, token, expires)
