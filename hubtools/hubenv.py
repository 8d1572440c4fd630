"""Point the real Hub clients (huggingface_hub, datasets, diffusers) at another endpoint, e.g. the local hub.

huggingface_hub, datasets and diffusers read ``HF_ENDPOINT`` once, when they are imported, into module constants. Setting the environment variables is enough for modules imported
later; for modules already imported, ``point_clients_at`` also rewrites those constants in place.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

# Module-level string constants that hold the endpoint (or a URL template that starts with it).
_ENDPOINT_CONSTANTS = (
    "ENDPOINT",
    "HF_ENDPOINT",
    "HUGGINGFACE_CO_URL_TEMPLATE",
    "HUGGINGFACE_CO_RESOLVE_ENDPOINT",
    "HUB_DATASETS_URL",
)
_CLIENT_PACKAGES = ("huggingface_hub", "datasets", "diffusers", "transformers")


def current_endpoint() -> str:
    """The endpoint the Hub clients of this process use now."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        return constants.ENDPOINT
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def point_clients_at(url: str) -> None:
    """Make every Hub client in this process use ``url``: no download counting, no parquet export; uploads
    keep the client's own choice of Xet or LFS (the local hub speaks both). Safe to call before or after
    the clients are imported, and more than once."""
    url = url.rstrip("/")
    previous = current_endpoint()
    os.environ["HF_ENDPOINT"] = url
    os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"

    # Every already-imported client module constant that holds the old endpoint, whatever it imported it as.
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in _CLIENT_PACKAGES:
            continue
        namespace = getattr(module, "__dict__", {})
        for attribute in _ENDPOINT_CONSTANTS:
            value = namespace.get(attribute)
            if isinstance(value, str) and (value == previous or value.startswith(previous + "/")):
                setattr(module, attribute, url + value[len(previous):])

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        host = urlsplit(url).hostname
        if host and hasattr(constants, "HF_URL_HOSTS"):
            constants.HF_URL_HOSTS = frozenset(constants.HF_URL_HOSTS | {host.lower()})
    hf_api = sys.modules.get("huggingface_hub.hf_api")
    if hf_api is not None and getattr(hf_api, "api", None) is not None:
        # The module-level HfApi behind huggingface_hub.model_info, upload_file, ... keeps its own endpoint.
        hf_api.api.endpoint = url
    # datasets reads no environment variable for its parquet export: import its config now if it is
    # installed, so the switch is off whenever datasets is used later in this process.
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is None and importlib.util.find_spec("datasets") is not None:
        datasets_config = importlib.import_module("datasets.config")
    if datasets_config is not None:
        datasets_config.USE_PARQUET_EXPORT = False
        datasets_config.HF_UPDATE_DOWNLOAD_COUNTS = False


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the endpoint could not be reached (refused, DNS, timeout), not a refusal."""
    # The Hub client's HTTP library (httpx or its fork httpx2) raises TransportError subclasses, requests
    # (datasets' fsspec paths) ConnectionError: matched by name so any of them works.
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "ConnectError", "TimeoutException"})


@contextmanager
def hub_progress_bars_hidden() -> Iterator[None]:
    """huggingface_hub's transfer bars off for a block (uploads that are scenery, not the user's own)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    were_on = not are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if were_on:
            enable_progress_bars()
