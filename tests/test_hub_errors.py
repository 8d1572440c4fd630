"""The one translation of Hub client errors: the wrapped chain is searched, tokens never come out."""

import httpx
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from hubtools.errors import ConfigError, HubError, InputError
from hubtools.hub_errors import hub_errors


def _response(status: int, body: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json=body or {}, request=httpx.Request("GET", "http://127.0.0.1/api/models/a/b"))


def test_a_wrapped_missing_repo_is_found_through_the_chain():
    with pytest.raises(ConfigError, match=r"^CLIP encoder a/b not found on .*: check the id$"):
        with hub_errors("CLIP encoder a/b", missing=ConfigError, not_found_hint="check the id"):
            try:
                raise RepositoryNotFoundError("404 Client Error", response=_response(404))
            except RepositoryNotFoundError as error:
                raise OSError("a/b is not a local folder and is not a valid model identifier") from error


def test_gated_and_refused_requests_read_as_one_line_without_the_token():
    token = "hf_abcdefghijklmnopqrstuvwxyz"
    with pytest.raises(HubError, match="is gated"):
        with hub_errors("base model a/b"):
            raise GatedRepoError("gated", response=_response(401))
    with pytest.raises(HubError) as caught:
        with hub_errors("a/b", action="push to", token=token, missing=None, status_hints={403: "no write access"}):
            raise HfHubHTTPError("403 Forbidden", response=_response(403, {"error": f"token {token} may not write"}))
    assert str(caught.value) == "could not push to a/b: HTTP 403: token *** may not write (no write access)"


def test_unreachable_endpoint_and_unrelated_errors():
    with pytest.raises(HubError, match=r"^could not reach the Hub at .* to read dataset a/b \(refused\); check"):
        with hub_errors("dataset a/b", missing=InputError):
            raise httpx.ConnectError("refused")
    with pytest.raises(KeyError):  # not the Hub's: a bug, passed through untouched
        with hub_errors("dataset a/b"):
            raise KeyError("x")


def test_a_refused_token_is_reported_before_training(local_hub):
    from hubtools.runner import check_push_access

    with pytest.raises(HubError, match=r"^could not check the token: HTTP 401: .*\(the token was refused"):
        check_push_access(f"{local_hub.user}/x", "hf_notarealtokenbutsecret")
    assert check_push_access(f"{local_hub.user}/x", local_hub.token) == local_hub.user
