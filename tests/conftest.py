"""Shared test setup: the real Hub clients pointed at a local hub on 127.0.0.1, never the internet.

``HF_ENDPOINT`` is read by huggingface_hub, datasets and diffusers when they are imported, so the
endpoint (a free port chosen now) and a throw-away ``HF_HOME`` are set here, before any test module
imports them. The server itself starts once per session, on first use of ``local_hub``.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SESSION_DIR = Path(tempfile.mkdtemp(prefix="hubtools-tests-"))
_PORT = _free_port()
ENDPOINT = f"http://127.0.0.1:{_PORT}"

# Short tokens that cannot be mistaken for real Hub tokens.
TESTER_TOKEN = "tester-secret-token"
OTHER_TOKEN = "other-secret-token"
HUBTOOLS_TOKEN = "hubtools-secret-token"

os.environ.update(
    {
        "HF_ENDPOINT": ENDPOINT,
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(_SESSION_DIR / "hf-home"),
        "HF_DATASETS_CACHE": str(_SESSION_DIR / "hf-datasets"),
        "HUBTOOLS_CACHE": str(_SESSION_DIR / "hubtools-cache"),
        "TOKENIZERS_PARALLELISM": "false",
        "DIFFUSERS_VERBOSITY": "error",
        "TRANSFORMERS_VERBOSITY": "error",
        # The tiny models gain nothing from a second thread, and two threads per process slow everything
        # down badly whenever another process wants the other core (measured: 0.2 vs 5 steps/s).
        "OMP_NUM_THREADS": "1",
    }
)
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_DISABLE_XET", None)  # the clients' default (Xet uploads): the local hub speaks it
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)


@dataclass
class LocalHubHandle:
    url: str
    data_dir: Path
    server: object  # hubtools.localhub.LocalHub: set_likes(), set_downloads()
    token: str = TESTER_TOKEN
    user: str = "tester"
    other_token: str = OTHER_TOKEN
    other_user: str = "other"
    hubtools_token: str = HUBTOOLS_TOKEN
    org: str = "acme"  # an organization whose one member is ``tester``

    def set_likes(self, repo_id: str, likes: int, repo_type: str = "model") -> None:
        self.server.set_likes(repo_id, likes, repo_type=repo_type)

    def set_downloads(self, repo_id: str, downloads: int, repo_type: str = "model") -> None:
        self.server.set_downloads(repo_id, downloads, repo_type=repo_type)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's in-process training (``pytestmark = usefixtures(...)``): on a shared
    2-core machine, torch's default two OpenMP threads per process make each step 20x slower as soon as other
    processes run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def local_hub():
    """The local hub for the whole session, with users ``tester``, ``other`` and ``hubtools``, and the
    organization ``acme`` (member: ``tester``)."""
    from hubtools.localhub import serve_in_background

    data_dir = _SESSION_DIR / "hub-data"
    tokens = {"tester": TESTER_TOKEN, "other": OTHER_TOKEN, "hubtools": HUBTOOLS_TOKEN}
    with serve_in_background(data_dir, port=_PORT, tokens=tokens, organizations={"acme": ["tester"]}) as server:
        assert server.url.rstrip("/") == ENDPOINT
        yield LocalHubHandle(url=server.url.rstrip("/"), data_dir=data_dir, server=server)


@pytest.fixture(scope="session")
def tiny_model_repo(local_hub) -> str:
    """``hubtools/tiny-stable-diffusion``, published once per session on the local hub."""
    from hubtools.tinymodel import publish_tiny_model

    return publish_tiny_model(local_hub.url, local_hub.hubtools_token)


@pytest.fixture(scope="session")
def api(local_hub):
    """``HfApi`` signed in as ``tester`` against the local hub."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=local_hub.url, token=local_hub.token)


@pytest.fixture
def hf_token(local_hub, monkeypatch) -> str:
    """The tester's token in ``HF_TOKEN``, as a user's shell would have it."""
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    return local_hub.token
