"""The tiny offline models used by tests and the demo, one per model family, and their publishing to a
(local) Hub.

Each tiny model has the real structure of its family (SD 1.x: UNet with cross-attention, 8x VAE, CLIP text
encoder with the real 49,408-token vocabulary; SDXL: two CLIP encoders and a ``text_time`` UNet; FLUX.1:
CLIP + T5, a transformer over packed 16-channel latents) at a few million random parameters and 64 px, so
every code path a real run takes is exercised in seconds on a CPU. They are published on the (local) Hub as
``hubtools/tiny-stable-diffusion``, ``hubtools/tiny-stable-diffusion-xl`` and ``hubtools/tiny-flux`` and
loaded from there with ``from_pretrained``, like any base model. The builders live with their families
(``Family.build_tiny_pipeline``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hubtools.families import FAMILIES, by_name



def build_tiny_pipeline(family: str = "sd"):
    """The deterministic random-weight pipeline of a model family (``sd``, ``sdxl``, ``flux``): 64 px, a few
    million parameters (``hubtools.families``)."""
    return by_name(family).build_tiny_pipeline()


def publish_tiny_model(endpoint: str, token: str, repo_id: str | None = None, *, family: str = "sd") -> str:
    """Publish the tiny pipeline of ``family`` to the Hub at ``endpoint`` (idempotent) as ``repo_id`` (default:
    ``hubtools/tiny-stable-diffusion``, ``hubtools/tiny-stable-diffusion-xl``, ``hubtools/tiny-flux``) and
    return its repo id."""
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


TINY_FAMILIES = tuple(family.name for family in FAMILIES)  # every family has its tiny model
