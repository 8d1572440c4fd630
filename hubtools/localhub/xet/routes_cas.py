"""The CAS API of the Xet protocol, served by the hub itself under ``/xet-cas`` (the ``casUrl`` the token
endpoints hand out): xorb upload and existence, shard upload. It is its own small app, mounted into the
hub's, because its bearer tokens are Xet access tokens, not hub tokens.

No global deduplication is offered (``/v1/chunks`` answers 404, as for an unknown chunk): telling a client
that a chunk exists would tell it that someone stored that content."""

from __future__ import annotations


from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubtools.localhub.context import read_body
from hubtools.localhub.errors import HubHTTPError
from hubtools.localhub.xet.format import MAX_XORB_BYTES, XetFormatError, parse_shard_files
from hubtools.localhub.xet.hashing import hex_to_hash
from hubtools.localhub.xet.store import XetRefused, XetStore

CAS_PREFIX = "/xet-cas"
MAX_SHARD_BYTES = 64 * 1024 * 1024


def _refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"X-Error-Message": message[:500]})


def _check_hash(text: str) -> str:
    try:
        hex_to_hash(text)
    except ValueError:
        raise XetRefused(400, "A Xet hash in the path is 64 lowercase hex digits.") from None
    return text.lower()


def create_cas_app(store: XetStore) -> FastAPI:
    cas = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @cas.exception_handler(XetRefused)
    async def _refused(request: Request, error: XetRefused) -> Response:
        return _refusal(error.status, error.message)

    @cas.exception_handler(HubHTTPError)
    async def _hub_error(request: Request, error: HubHTTPError) -> Response:
        return _refusal(error.status, error.message)

    @cas.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        return _refusal(error.status_code, "Not found: no such CAS endpoint." if error.status_code == 404
                        else str(error.detail))

    @cas.get("/v1/chunks/{prefix}/{chunk}")
    async def global_dedupe(request: Request, prefix: str, chunk: str) -> Response:
        store.grant_for(request.headers.get("authorization"), "read")
        _check_hash(chunk)
        return _refusal(404, "Chunk not tracked for deduplication.")

    @cas.head("/v1/xorbs/{prefix}/{xorb}")
    async def head_xorb(request: Request, prefix: str, xorb: str) -> Response:
        store.grant_for(request.headers.get("authorization"), "read")
        name = _check_hash(xorb)
        if not store.has_xorb(name):
            return Response(status_code=404)
        return Response(status_code=200, headers={"Content-Length": str(store.xorb_path(name).stat().st_size)})

    @cas.post("/v1/xorbs/{prefix}/{xorb}")
    async def upload_xorb(request: Request, prefix: str, xorb: str) -> Response:
        store.grant_for(request.headers.get("authorization"), "write")
        name = _check_hash(xorb)
        if prefix != "default":
            raise XetRefused(400, "The xorb prefix is 'default'.")
        body = await read_body(request, MAX_XORB_BYTES)
        inserted = await run_in_threadpool(store.put_xorb, name, body)
        return JSONResponse({"was_inserted": inserted})

    @cas.post("/v1/shards")
    async def upload_shard(request: Request) -> Response:
        grant = store.grant_for(request.headers.get("authorization"), "write")
        body = await read_body(request, MAX_SHARD_BYTES)
        try:
            files = parse_shard_files(body)
        except XetFormatError as error:
            raise XetRefused(400, str(error)) from None
        for info in files:
            await run_in_threadpool(store.register_file, info, grant)
        return JSONResponse({"result": 1})

    return cas


def token_answer(cas_url: str, token: str, expires: int) -> JSONResponse:
    """The token endpoints' answer: the JSON body hf_xet reads and the headers huggingface_hub reads."""
    return JSONResponse({"accessToken": token, "exp": expires, "casUrl": cas_url},
                        headers={"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token,
                                 "X-Xet-Token-Expiration": str(expires)})


__all__ = ["CAS_PREFIX", "create_cas_app", "token_answer"]
