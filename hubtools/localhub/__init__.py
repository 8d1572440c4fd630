"""A Hub-compatible server on 127.0.0.1 that the real clients (huggingface_hub, datasets, diffusers) talk to.

``serve_in_background(data_dir, tokens={"user": "token"})`` yields a ``LocalHub`` with ``.url`` to point
``HF_ENDPOINT`` at (see ``hubtools.hubenv.point_clients_at``).
"""

from hubtools.localhub.app import HubSettings, create_app
from hubtools.localhub.server import LocalHub, serve_in_background, set_downloads, set_likes

__all__ = [
    "HubSettings",
    "LocalHub",
    "create_app",
    "serve_in_background",
    "set_downloads",
    "set_likes",
]
