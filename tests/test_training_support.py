"""Helpers for the training tests (no tests here): a tiny base model folder and prepared run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hubtools.concepts.manifest import PreparedConcept, write_manifest, write_metadata
from hubtools.config import RUN_CONFIG_FILENAME, RunConfig, save_config

IDENTIFIER = "pkblz"
CLASS_NOUN = "dog"
RESOLUTION = 64


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test process's environment (local hub, caches) with pinned threads, for child trainers."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def tiny_base(root: Path) -> Path:
    """The tiny random pipeline saved as a local base-model folder (no hub needed)."""
    from hubtools.tinymodel import build_tiny_pipeline

    base = Path(root) / "base"
    if not (base / "model_index.json").is_file():
        build_tiny_pipeline().save_pretrained(base, safe_serialization=True)
    return base


def tiny_family_base(root: Path, family: str) -> Path:
    """The tiny random pipeline of a model family (sd, sdxl, flux) saved as a local base-model folder."""
    from hubtools.families import by_name

    if family == "sd":
        return tiny_base(root)
    base = Path(root) / f"base-{family}"
    if not (base / "model_index.json").is_file():
        by_name(family).build_tiny_pipeline().save_pretrained(base, safe_serialization=True)
    return base


def meta_parameter_counts(real_shape_models, *args) -> tuple[dict, dict[str, int]]:
    """A family's real-shape components built on the meta device (no memory), and each one's parameter count."""
    import torch

    with torch.device("meta"):
        models = real_shape_models(*args)
    return models, {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


def load_tiny_family_pipeline(root: Path, family: str):
    """The tiny pipeline of ``family`` saved and loaded back with plain diffusers (eval mode, as training's frozen
    encoders are), progress bars off."""
    from diffusers import DiffusionPipeline

    loaded = DiffusionPipeline.from_pretrained(tiny_family_base(root, family))
    loaded.set_progress_bar_config(disable=True)
    return loaded


def write_concept(run: Path, count: int = 3) -> None:
    """A prepared concept set: ``count`` distinct 64 px images in imagefolder layout with captions."""
    images = run / "concept" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = []
    for i in range(count):
        pixels = np.full((RESOLUTION, RESOLUTION, 3), 30, np.uint8)
        pixels[..., i % 3] = 210
        pixels[16:48, 16:48] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
        rows.append({"file_name": f"images/{i:02d}.png", "text": f"a photo of {IDENTIFIER} {CLASS_NOUN}"})
    concept = run / "concept"
    prepared = PreparedConcept(
        dir=concept, images=[concept / row["file_name"] for row in rows], captions=[row["text"] for row in rows],
        manifest_path=concept / "manifest.json", contact_sheet_path=concept / "contact_sheet.png",
        metadata_path=concept / "metadata.jsonl", source=str(concept), source_revision=None, resolution=RESOLUTION,
        counts={"accepted": count, "rejected": 0, "duplicate": 0, "ignored": 0, "total": count},
    )
    write_metadata(prepared)  # through the concept stage's own writers, so the fixture cannot drift
    write_manifest(prepared)


def make_run(root: Path, name: str = "run", *, training: dict | None = None, prior: dict | None = None,
             base: Path | None = None, eval: dict | None = None) -> tuple[RunConfig, Path]:
    """A run folder as the orchestration leaves it before training: resolved config + concept set."""
    base = base or tiny_base(root)
    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    write_concept(run)
    config = RunConfig.model_validate({
        "model": {"base_model": str(base)},
        "concept": {"identifier": IDENTIFIER, "class_noun": CLASS_NOUN},
        "training": {"steps": 6, "resolution": RESOLUTION, "learning_rate": 1e-3, "device": "cpu",
                     **(training or {})},
        "prior": {"num_class_images": 2, "generation_steps": 2, "generation_batch_size": 2, **(prior or {})},
        "sampling": {"num_inference_steps": 2, "seeds": [0, 1]},
        "eval": eval or {},
    }).resolve()
    save_config(config, run / RUN_CONFIG_FILENAME)
    return config, run


def render(pipe, prompt: str = f"a photo of {IDENTIFIER} {CLASS_NOUN}", seed: int = 0) -> np.ndarray:
    import torch

    image = pipe(prompt=prompt, num_inference_steps=2, height=RESOLUTION, width=RESOLUTION,
                 generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
    return np.asarray(image)


# Portrait, landscape and square photos cut from the shipped DreamBench dog photos: (photo, crop box).
MIXED_SHAPES = {
    "portrait.jpg": ("00.jpg", (97, 0, 682, 780)),  # 3:4
    "landscape.jpg": ("01.jpg", (0, 170, 781, 609)),  # 16:9
    "square.jpg": ("02.jpg", (0, 0, 780, 780)),
    "tall.jpg": ("03.jpg", (78, 0, 702, 780)),  # 4:5
    "wide.jpg": ("04.jpg", (0, 129, 687, 558)),  # 16:10
}


def write_mixed_photos(folder: Path, captions: dict[str, str] | None = None, only: list[str] | None = None) -> Path:
    """Portrait, landscape and square photos (JPEG) made from the DreamBench dogs, with optional kohya
    ``.txt`` caption sidecars."""
    from hubtools.resources import DEMO_CONCEPT_DIR

    folder.mkdir(parents=True, exist_ok=True)
    for name, (photo, box) in MIXED_SHAPES.items():
        if only is not None and name not in only:
            continue
        with Image.open(Path(DEMO_CONCEPT_DIR) / photo) as image:
            image.convert("RGB").crop(box).save(folder / name, quality=92)
    for name, text in (captions or {}).items():
        (folder / name).with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    return folder


def make_bucketed_run(root: Path, name: str, *, family: str = "sd", training: dict | None = None,
                      prior: dict | None = None, captions: dict[str, str] | None = None,
                      buckets: str = "auto", only: list[str] | None = None,
                      template: str | None = None) -> tuple[RunConfig, Path]:
    """A run folder whose concept set was prepared from mixed-shape photos into aspect-ratio buckets (captions
    from ``.txt`` sidecars, through ``template`` when given)."""
    from hubtools.concepts import prepare_concept
    from hubtools.concepts.captions import CaptionRules
    from hubtools.families import by_name

    cfg, run = make_run(root, name, training=training, prior=prior, base=tiny_family_base(root, family))
    photos = write_mixed_photos(Path(root) / f"{name}-photos", captions, only)
    prepare_concept(photos, run / "concept", resolution=RESOLUTION, caption=f"a photo of {IDENTIFIER} {CLASS_NOUN}",
                    progress=False, buckets=buckets, size_multiple=by_name(family).size_multiple,
                    captions=CaptionRules(template=template, identifier=IDENTIFIER, class_noun=CLASS_NOUN))
    return cfg, run
