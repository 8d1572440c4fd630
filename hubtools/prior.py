"""Prior-preservation class images: generated once with the base model and cached, or taken as given.

Generated sets live in ``$HUBTOOLS_CACHE/class-images/<key>`` (default ``~/.cache/hubtools``), where the
key hashes everything that decides the pixels: base model and revision, class prompt, resolution, seed,
count and generation settings. Each image has its own seeded generator, so the batch size does not change
the result and is not part of the key. Under several processes each renders its share of the batches. A set is generated into a temp folder and renamed into place, so
an interrupted generation is never mistaken for a cached one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from hubtools import distributed
from hubtools.atomic import replace_dir
from hubtools.config import RunConfig, parse_hub_ref
from hubtools.errors import InputError
from hubtools.imagefiles import image_files
from hubtools.reporting import Reporter, reporter_or_silent
from hubtools.usercache import user_cache

MANIFEST = "class_images.json"
_KEY_VERSION = 1


@dataclass
class ClassImages:
    dir: Path
    images: list[Path]
    cache_key: str
    generated: bool  # True when this call generated them (False: cache hit, folder or Hub dataset)
    source: str  # "generated" | "cache" | "folder:<path>" | "hub:<dataset id>"
    sizes: list[tuple[int, int]] | None = None  # (width, height) each was generated at; None: any, cropped to fit

    def for_size(self, size: tuple[int, int]) -> list[Path]:
        """The class images of one bucket: those generated at its size (given ones: all, cropped to fit)."""
        if self.sizes is None:
            return self.images
        return [image for image, own in zip(self.images, self.sizes) if own == size]

    def to_dict(self) -> dict:
        return {"count": len(self.images), "cache_key": self.cache_key, "source": self.source,
                "generated": self.generated}


def cache_root(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir).expanduser() / "class-images" if cache_dir else user_cache("class-images")


def _local_model_fingerprint(folder: Path) -> str:
    """A local base model has no commit sha: its weight files' names, sizes and mtimes stand in."""
    parts = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                   for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def class_image_counts(cfg: RunConfig, sizes: dict[tuple[int, int], int] | None) -> dict[tuple[int, int], int]:
    """How many class images to generate at each (width, height): in the instance images' proportions, at
    least one per bucket; without buckets all at the training square."""
    from hubtools.concepts.buckets import Bucket, distribute

    resolution = cfg.training.main_resolution
    if not sizes:
        return {(resolution, resolution): cfg.prior.num_class_images}
    shares = distribute(cfg.prior.num_class_images, {Bucket(*size): count for size, count in sizes.items()})
    return {(bucket.width, bucket.height): count for bucket, count in shares.items()}


def class_images_key(cfg: RunConfig, base, counts: dict[tuple[int, int], int] | None = None) -> str:
    revision = base.revision
    if revision is None and Path(base.model_id).is_dir():
        revision = "local:" + _local_model_fingerprint(Path(base.model_id))
    settings = {
        "version": _KEY_VERSION, "base_model": base.model_id, "revision": revision,
        "class_prompt": cfg.class_prompt, "resolution": cfg.training.main_resolution, "seed": cfg.training.seed,
        "count": cfg.prior.num_class_images, "steps": cfg.prior.generation_steps,
        "guidance_scale": cfg.prior.guidance_scale, "scheduler": type(base.pipeline.scheduler).__name__,
    }
    resolution = cfg.training.main_resolution
    if counts and counts != {(resolution, resolution): cfg.prior.num_class_images}:
        settings["sizes"] = sorted([width, height, count] for (width, height), count in counts.items())
    if cfg.model.vae:  # another VAE decodes other pixels
        settings["vae"] = cfg.model.vae
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def ensure_class_images(cfg: RunConfig, base, *, cache_dir: Path | None = None, device=None,
                        reporter: Reporter | None = None, progress: bool = True,
                        sizes: dict[tuple[int, int], int] | None = None) -> ClassImages:
    """The class images of this run: from ``prior.source`` when set, else cached or generated now, at the
    instance images' bucket ``sizes`` ((width, height) -> images) in the same proportions (progress to
    ``reporter``; ``progress=False`` drops it, for library callers)."""
    if cfg.prior.source:
        return _from_source(cfg, cfg.prior.source, cache_dir)
    counts = class_image_counts(cfg, sizes)
    key = class_images_key(cfg, base, counts)
    folder = cache_root(cache_dir) / key
    cached = _read_cached(folder, cfg.prior.num_class_images)
    # several processes (each machine has its own cache): all generate their share when one machine lacks them
    generated = any(distributed.each("checking the class image cache", lambda: cached is None))
    if generated:
        _generate(cfg, base, folder, counts, device=device,
                  reporter=reporter_or_silent(reporter, progress=progress))
        cached = _read_cached(folder, cfg.prior.num_class_images) or []
    return ClassImages(folder, cached, key, generated=generated, source="generated" if generated else "cache",
                       sizes=_read_sizes(folder, len(cached)) if sizes else None)


def _read_sizes(folder: Path, count: int) -> list[tuple[int, int]] | None:
    recorded = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("sizes")
    return [(int(w), int(h)) for w, h in recorded[:count]] if recorded else None


def _read_cached(folder: Path, count: int) -> list[Path] | None:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    names = json.loads(manifest.read_text(encoding="utf-8"))["images"]
    images = [folder / name for name in names]
    if len(images) < count or not all(p.is_file() for p in images):
        return None
    return images[:count]


@torch.no_grad()
def _generate(cfg: RunConfig, base, folder: Path, counts: dict[tuple[int, int], int], *, device,
              reporter: Reporter) -> None:
    """Render the set into ``folder``. Under several processes each renders its share of the batches (every
    image has its own seed, every batch is the one a single process draws, so the PNGs are the same bytes);
    all of them are gathered, and one process per machine writes the set into that machine's cache."""
    batch = cfg.prior.generation_batch_size
    # image i's size: the buckets one after another (image i keeps its own seed whatever the sizes)
    size_of = [size for size in sorted(counts, key=lambda s: (s[0] / s[1], s[0])) for _ in range(counts[size])]
    batches = _size_batches(size_of, batch)
    mine = [indices for number, indices in enumerate(batches) if distributed.mine(number)]
    shares = distributed.each("the class images", lambda: _render(cfg, base, mine, size_of, device=device,
                                                                    reporter=reporter))
    drawn = {index: png for share in shares for index, png in share.items()}
    distributed.each("writing the class images", lambda: _write_set(cfg, folder, drawn, size_of)
                     if distributed.is_local_main() else None)


def _render(cfg: RunConfig, base, batches: list[list[int]], size_of: list[tuple[int, int]], *, device,
            reporter: Reporter) -> dict[int, bytes]:
    """The PNG bytes of the images in ``batches``, by image index."""
    pipe = base.pipeline
    # the family's guidance argument and call arguments (Qwen-Image: true_cfg_scale against a blank negative)
    family = base.family
    guidance = {**family.call_kwargs(dict(pipe.components[family.denoiser].config)),
                **family.guidance_kwargs(cfg.prior.guidance_scale)}
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    on_gpu = pipe.device.type == "cuda"
    # half precision on a GPU: several times faster, and class images only need to look like the class
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                if on_gpu else contextlib.nullcontext())
    count = sum(len(indices) for indices in batches)  # this process's share
    drawn: dict[int, bytes] = {}
    reporter.progress("class images", 0, count)
    with autocast:
        for indices in batches:
            generators = [torch.Generator().manual_seed(cfg.training.seed * 1_000_003 + i) for i in indices]
            width, height = size_of[indices[0]]
            images = pipe(prompt=[cfg.class_prompt] * len(indices), num_inference_steps=cfg.prior.generation_steps,
                          height=height, width=width, generator=generators, **guidance).images
            for i, image in zip(indices, images):
                png = io.BytesIO()
                image.save(png, format="PNG")
                drawn[i] = png.getvalue()
            reporter.progress("class images", len(drawn), count)
    return drawn


def _write_set(cfg: RunConfig, folder: Path, drawn: dict[int, bytes], size_of: list[tuple[int, int]]) -> None:
    """The images and their manifest into a temp folder, renamed into place: a set is there whole or not at all."""
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        names = [f"{i:05d}.png" for i in sorted(drawn)]
        for i, name in zip(sorted(drawn), names):
            (tmp / name).write_bytes(drawn[i])
        (tmp / MANIFEST).write_text(json.dumps({"class_prompt": cfg.class_prompt, "images": names,
                                                "sizes": [list(size) for size in size_of]}, indent=2),
                                    encoding="utf-8")
        replace_dir(tmp, folder)  # a stale or smaller set under the same key (or a concurrent run's) goes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _size_batches(size_of: list[tuple[int, int]], batch: int) -> list[list[int]]:
    """Image indices in batches of at most ``batch``, each of one size (one size: today's batches)."""
    batches: list[list[int]] = []
    for index, size in enumerate(size_of):
        if batches and len(batches[-1]) < batch and size_of[batches[-1][0]] == size:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _from_source(cfg: RunConfig, source: str, cache_dir: Path | None) -> ClassImages:
    count = cfg.prior.num_class_images
    folder = Path(source).expanduser()
    if folder.is_dir():
        images = image_files(folder)[:count]
        if not images:
            raise InputError(f"prior.source {source} has no images (png, jpg, webp): point it at a folder of "
                             "class images, or unset it to generate them")
        key = hashlib.sha256("\n".join(str(p.resolve()) for p in images).encode()).hexdigest()[:20]
        return ClassImages(folder, images, key, generated=False, source=f"folder:{folder}")
    hub_ref = parse_hub_ref(source)
    if hub_ref is not None:
        return _from_hub_dataset(*hub_ref, count, cache_dir, resolution=cfg.training.main_resolution)
    raise InputError(f"prior.source {source!r} is neither a folder nor a Hub dataset id (namespace/name[@revision])")


def _from_hub_dataset(repo_id: str, revision: str | None, count: int, cache_dir: Path | None, *,
                      resolution: int) -> ClassImages:
    """The first ``count`` images of a Hub dataset, read through ``concepts`` (the one loader of Hub
    datasets and safe image reader) and exported once as PNG into the cache, keyed by the commit."""
    from hubtools.concepts.files import RejectedImage, read_image
    from hubtools.concepts.hub import hub_dataset_source

    try:
        resolved = hub_dataset_source(repo_id, revision=revision)
    except InputError as error:
        raise InputError(f"prior.source: {error.message}", hint=error.hint) from None
    source = repo_id if revision is None else f"{repo_id}@{revision}"
    key = hashlib.sha256(f"hub\n{repo_id}\n{resolved.source_revision}\n{count}".encode()).hexdigest()[:20]
    folder = cache_root(cache_dir) / f"hub-{key}"
    cached = _read_cached(folder, min(count, resolved.total or 0))
    if cached is None:
        tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        names = []
        for item in resolved.items:
            if len(names) == count:
                break
            if item.data is None:
                continue
            try:
                image = read_image(item.data, name=item.path or f"row-{item.row}", min_side=resolution).image
            except RejectedImage:
                continue  # a class image that does not decode is one fewer, not a failed run
            names.append(f"{len(names):05d}.png")
            image.save(tmp / names[-1])
        if not names:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"Hub dataset {source} has no readable images in its train split")
        (tmp / MANIFEST).write_text(json.dumps({"source": source, "revision": resolved.source_revision,
                                                "images": names}, indent=2), encoding="utf-8")
        replace_dir(tmp, folder)
        cached = _read_cached(folder, len(names))
    return ClassImages(folder, cached or [], key, generated=False, source=f"hub:{source}")
