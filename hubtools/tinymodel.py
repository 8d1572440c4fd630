"""Publishing the tiny offline models (one per family in the registry) to a (local) Hub.

Each family builds its own tiny model (``Family.build_tiny_pipeline``: the real structure of the family at a
few million random parameters and 64 px, so every code path a real run takes is exercised in seconds on a
CPU) and names its repo (``Family.tiny_repo_id``); this module only saves and uploads it, so that tests and
the demo load it with ``from_pretrained`` like any base model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hubtools.families import DEFAULT_FAMILY, by_name, names


def build_tiny_pipeline(family: str = DEFAULT_FAMILY.name):
    """The deterministic random-weight pipeline of a model family (by its registry name): 64 px, a few million
    parameters."""
    return by_name(family).build_tiny_pipeline()


def publish_tiny_model(endpoint: str, token: str, repo_id: str | None = None, *, family: str = DEFAULT_FAMILY.name) -> str:
    """Publish the tiny pipeline of ``family`` to the Hub at ``endpoint`` (idempotent) as ``repo_id`` (default: the
    family's ``tiny_repo_id``) and return its repo id."""
    from huggingface_hub import HfApi

    chosen = by_name(family)
    repo_id = repo_id or chosen.tiny_repo_id
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hubtools-tiny-") as tmp:
        chosen.build_tiny_pipeline().save_pretrained(tmp, safe_serialization=True)
        Path(tmp, "README.md").write_text(chosen.tiny_card(), encoding="utf-8")
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message="Add the tiny random-weight pipeline")
    return repo_id


TINY_FAMILIES = names()  # every family in the registry has a tiny model
