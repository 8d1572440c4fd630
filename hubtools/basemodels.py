"""Base-model ids that moved on the Hub, and where they live now.

Configs and tutorials keep naming a base model by the id it had when they were written. When a repo is
taken down and re-published under another namespace, the old id fails with a bare 404; resolving the known
moves here turns that into a working run plus a one-line note.
"""

from __future__ import annotations

# Old id -> current id. Only moves that are publicly documented belong here.
MOVED_BASE_MODELS: dict[str, str] = {
    # RunwayML withdrew its Stable Diffusion repos in 2024; the weights were re-published unchanged.
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}


def resolve_base_model(model_id: str) -> tuple[str, str | None]:
    """``(id to load, note or None)``: a known moved id becomes its new home, with a note saying so.

    Ids that are not known to have moved are returned unchanged (``CompVis/stable-diffusion-v1-4`` is
    still where it was); whether they exist is for the loader to find out and report.
    """
    new_id = MOVED_BASE_MODELS.get(model_id.strip())
    if new_id is None:
        return model_id, None
    return new_id, f"base model {model_id} has moved on the Hub; using {new_id} (the same weights)"
