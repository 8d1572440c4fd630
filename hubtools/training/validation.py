"""Validation grids during training: the same few prompts and seeds every time, so the grids of
successive steps show the subject being learnt (and overfitting coming: noise, copies of the photos)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hubtools.atomic import save_image_atomic

VALIDATION_PROMPTS = 2
VALIDATION_SEEDS = 2
MAX_VALIDATION_STEPS = 25


def validation_path(images_dir: Path, step: int) -> Path:
    return Path(images_dir) / "validation" / f"step-{step:06d}.png"


@torch.no_grad()
def render_validation_grid(*, pipe, denoiser, prompts: list[str], seeds: list[int], num_inference_steps: int,
                           resolution: int, device: torch.device, autocast_dtype: torch.dtype | None, path: Path,
                           call_kwargs: dict[str, Any] | None = None) -> list[Image.Image]:
    """Prompts as rows, seeds as columns, drawn by ``pipe`` (the family's pipeline over the model being trained,
    with a scheduler that stays clean at few steps); the grid written atomically to ``path``. Returns the images
    (row by row), which the fidelity probe scores."""
    from diffusers.utils import make_image_grid

    prompts = prompts[:VALIDATION_PROMPTS]
    seeds = seeds[:VALIDATION_SEEDS]
    pipe.set_progress_bar_config(disable=True)
    was_training = denoiser.training
    denoiser.eval()
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    images = []
    try:
        with autocast:
            for prompt in prompts:
                for seed in seeds:
                    generator = torch.Generator().manual_seed(seed)
                    images.append(pipe(prompt=prompt, num_inference_steps=min(num_inference_steps, MAX_VALIDATION_STEPS),
                                       height=resolution, width=resolution, generator=generator,
                                       **(call_kwargs or {})).images[0])
    finally:
        denoiser.train(was_training)
    save_image_atomic(make_image_grid(images, rows=len(prompts), cols=len(seeds)), path)
    return images
