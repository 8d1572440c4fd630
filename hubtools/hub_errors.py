"""The Hub client's exceptions as one line a user can act on, written once for every Hub call.

``with hub_errors("base model X"):`` around any call into huggingface_hub, datasets, diffusers or
transformers turns a gated repo, a missing repo or revision, a refused HTTP request and an unreachable
endpoint into a ``HubtoolsError`` that names the subject and says what to do. transformers and datasets
wrap the Hub's errors in their own (``OSError``...), so the whole ``__cause__``/``__context__`` chain is
searched. Messages carry the status line and the server's one-line reason, never a token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from hubtools.errors import HubError, HubtoolsError, first_line
from hubtools.hubenv import current_endpoint, is_connection_error

LOGIN_HINT = "check the id, or log in (`hf auth login`) if it is private"
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_STATUS_HINTS = {401: "the token was refused; log in again or set HF_TOKEN"}


def _chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while True:
        last = chain[-1]
        following = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if following is None or following in chain:
            return chain
        chain.append(following)


def _first(chain: list[BaseException], kind: type) -> BaseException | None:
    return next((item for item in chain if isinstance(item, kind)), None)


def _server_reason(error: BaseException) -> str:
    """The server's own one-line reason (the Hub's JSON ``error``), else the error's first line."""
    response = getattr(error, "response", None)
    if response is not None:
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                return first_line(body["error"])
        except ValueError:
            pass
    return first_line(error)


def scrub(text: str, token: str | None = None) -> str:
    """``text`` without ``token`` nor anything shaped like a Hub token."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_SHAPE.sub("***", text)


def hub_error(
    error: BaseException,
    subject: str,
    *,
    action: str = "read",
    token: str | None = None,
    missing: type[HubtoolsError] | None = HubError,
    not_found_hint: str = LOGIN_HINT,
    revision: str | None = None,
    revision_hint: str = "check the branch, tag or commit",
    status_hints: dict[int, str] | None = None,
    retry_hint: str | None = None,
) -> HubtoolsError | None:
    """The one-line error for ``error`` raised while trying to ``action`` ``subject``; None if not the Hub's.

    ``missing`` is the error type for a gone repo or revision (``ConfigError`` for an id from the config,
    ``InputError`` for a source); None treats them as refusals like any other (a push creates its repo).
    """
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, HubtoolsError):
        return None  # already one line
    chain = _chain(error)
    endpoint = current_endpoint()
    message: str | None = None
    kind: type[HubtoolsError] = HubError
    if missing is not None and _first(chain, GatedRepoError) is not None:
        message = f"{subject} is gated: accept its conditions on the Hub and log in (`hf auth login`)"
    elif missing is not None and _first(chain, RevisionNotFoundError) is not None:
        message, kind = f"{subject} has no revision {revision!r}: {revision_hint}", missing
    elif missing is not None and _first(chain, RepositoryNotFoundError) is not None:
        message, kind = f"{subject} not found on {endpoint}: {not_found_hint}", missing
    elif (http := _first(chain, HfHubHTTPError)) is not None:
        response = getattr(http, "response", None)
        status = getattr(response, "status_code", None)
        hint = {**_STATUS_HINTS, **(status_hints or {})}.get(status, retry_hint)
        message = f"could not {action} {subject}: HTTP {status}: {_server_reason(http)}"
        message += f" ({hint})" if hint else ""
    elif (unreachable := next((item for item in chain if is_connection_error(item)), None)) is not None:
        message = (f"could not reach the Hub at {endpoint} to {action} {subject} ({first_line(unreachable)}); "
                   "check the connection or HF_ENDPOINT")
    if message is None:
        return None
    return kind(scrub(message, token))


@contextmanager
def hub_errors(subject: str, **options) -> Iterator[None]:
    """Re-raise the Hub's errors inside the block as ``hub_error`` lines; anything else passes through.

    Takes ``hub_error``'s keyword options (action, token, missing, hints...).
    """
    try:
        yield
    except HubtoolsError:
        raise
    except Exception as error:
        translated = hub_error(error, subject, **options)
        if translated is None:
            raise
        raise translated from None
