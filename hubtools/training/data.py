"""Training data: instance and class images as tensors, cached latents and text embeddings, data order.

The data order and every random draw of a step are functions of (seed, step), not of a running RNG, so a run
resumed from a checkpoint sees exactly the batches and noise an uninterrupted run would; under several
processes each draws the whole global batch and keeps its own rows, so N processes at batch b train as one
process at batch N*b does.
``encode_training_data`` builds what the loop draws from; ``TrainingData.draw`` is one micro-batch of it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from PIL import Image

from hubtools.concepts.buckets import ImageGeometry
from hubtools.concepts.captions import training_caption
from hubtools.concepts.manifest import ManifestEntry, load_prepared_concept
from hubtools.errors import HubtoolsError, InputError
from hubtools.training.bucket_order import bucket_seed, bucket_step

if TYPE_CHECKING:
    from hubtools.families import Conditioning, Family
    from hubtools.prior import ClassImages



Size = tuple[int, int]  # (width, height) in pixels


@dataclass
class Examples:
    """One set of images (instance or class) and the caption of each; with buckets, the size of each
    image and where it was cut from its photo."""

    images: list[Path]
    captions: list[str]
    sizes: list[Size] | None = None  # None: every image is the training square (--buckets off)
    geometry: list[ImageGeometry | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def bucket_counts(self) -> dict[Size, int] | None:
        """Images per bucket size; None without buckets."""
        if self.sizes is None:
            return None
        counts: dict[Size, int] = {}
        for size in self.sizes:
            counts[size] = counts.get(size, 0) + 1
        return counts


def load_instance_examples(concept_dir: Path, default_caption: str) -> Examples:
    """The prepared concept set (an imagefolder); images without a caption get the instance prompt."""
    concept = load_prepared_concept(concept_dir)
    images = concept.images
    captions = [caption or default_caption for caption in concept.captions]
    if not images:
        raise InputError(f"the concept set in {concept_dir} has no images: add photos and prepare it again")
    entries = concept.accepted_entries
    if not concept.buckets or all(entry.bucket == [concept.resolution] * 2 for entry in entries):
        # --buckets off, or every photo in the training square: the square crop's path, so such a set trains to
        # the weights it always did (SDXL's time ids then name the training size, as before buckets)
        return Examples(images, captions)
    sizes = [_image_size(image, entry) for image, entry in zip(images, entries)]
    return Examples(images, captions, sizes, [_geometry(entry) for entry in entries])


def _image_size(image: Path, entry: ManifestEntry) -> Size:
    if entry.bucket:
        return entry.bucket[0], entry.bucket[1]
    with Image.open(image) as opened:
        return opened.size


def _geometry(entry: ManifestEntry) -> ImageGeometry | None:
    if not (entry.bucket and entry.crop_box and entry.original_size):
        return None
    left, top, right, _ = entry.crop_box
    scale = entry.bucket[0] / max(1, right - left)  # the photo resized to cover the bucket
    return ImageGeometry((entry.original_size[0], entry.original_size[1]), (round(top * scale), round(left * scale)))


def at_resolutions(examples: Examples, resolutions: list[int], size_multiple: int) -> Examples:
    """Multi-resolution (ai-toolkit's ``resolution: [512, 768, 1024]``): the prepared photos (at the largest
    resolution) once more at each smaller one, each in the automatic bucket of that area nearest its shape (its
    square with ``--buckets off``). Every copy is its own example, so the bucket order draws each resolution in
    proportion to its images. One resolution: ``examples`` unchanged."""
    from hubtools.concepts.buckets import auto_buckets, nearest_bucket

    if len(resolutions) < 2:
        return examples
    main = max(resolutions)
    sizes = examples.sizes or [(main, main)] * len(examples)
    geometry = examples.geometry or [None] * len(examples)
    out = Examples(list(examples.images), list(examples.captions), list(sizes), list(geometry))
    for resolution in sorted(set(resolutions) - {main}, reverse=True):
        buckets = auto_buckets(resolution, size_multiple) if examples.sizes is not None else None
        for image, caption, size, where in zip(examples.images, examples.captions, sizes, geometry):
            smaller = nearest_bucket(size, buckets).as_tuple() if buckets else (resolution, resolution)
            out.images.append(image)
            out.captions.append(caption)
            out.sizes.append(smaller)
            out.geometry.append(_scaled_geometry(where, size, smaller))
    return out


def _scaled_geometry(where: ImageGeometry | None, size: Size, smaller: Size) -> ImageGeometry | None:
    """A photo's geometry once its prepared image (``size``) is resized to cover ``smaller`` and centre-cropped
    (what ``load_pixels`` does)."""
    if where is None:
        return None
    scale = max(smaller[0] / size[0], smaller[1] / size[1])
    extra_left = (max(smaller[0], round(size[0] * scale)) - smaller[0]) // 2
    extra_top = (max(smaller[1], round(size[1] * scale)) - smaller[1]) // 2
    top, left = where.crop_top_left
    return ImageGeometry(where.original_size, (round(top * scale) + extra_top, round(left * scale) + extra_left))


def concept_fingerprint(examples: Examples) -> str:
    """Changes when an image or caption changes: a resume must not silently train on different data."""
    digest = hashlib.sha256()
    for path, caption in zip(examples.images, examples.captions):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(caption.encode())
    return digest.hexdigest()[:16]


def load_pixels(paths: list[Path], resolution: int | Size) -> torch.Tensor:
    """(N, 3, H, W) float tensor in [-1, 1] (``resolution``: the square's side or (width, height)); images
    of another size are resized to cover it and centre-cropped."""
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (width, height):
                scale = max(width / image.width, height / image.height)
                size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BICUBIC)
                left, top = (image.width - width) // 2, (image.height - height) // 2
                image = image.crop((left, top, left + width, top + height))
            array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        tensors.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(tensors)


class LatentSource:
    """Latent distributions (mean, std) of a set of images: encoded once when the VAE is frozen and
    ``cache`` is on, else per batch. Sampling uses the step's generator, so caching changes no result."""

    def __init__(self, vae, pixels: torch.Tensor, *, cache: bool, device: torch.device, dtype: torch.dtype,
                 shift: float | None, scaling: float, encode_batch_size: int = 8,
                 distribution: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.vae, self.pixels, self.device, self.dtype = vae, pixels, device, dtype
        self.distribution = distribution  # the family's (mean, std) of the VAE's latents; None: latent_dist's
        self.count = len(pixels)
        self.shift, self.scaling = shift, scaling  # the family's: latents are (sample - shift) * scaling
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None
        if cache:
            parts = [self._encode(pixels[i:i + encode_batch_size]) for i in range(0, len(pixels), encode_batch_size)]
            self.cached = (torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts]))
            self.pixels = None  # hundreds of class images at 512 px are gigabytes of host memory

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.distribution is not None:
            mean, std = self.distribution(self.vae, pixels.to(self.device, self.dtype))
            return mean.float(), std.float()
        dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def sample(self, indices: list[int], noise: torch.Tensor) -> torch.Tensor:
        """Scaled latents for ``indices``; ``noise`` is a standard normal draw of the latent shape."""
        if self.cached is not None:
            mean, std = self.cached[0][indices], self.cached[1][indices]
        else:
            mean, std = self._encode(self.pixels[indices])
        sample = mean + std * noise.to(mean.device)
        if self.shift is not None:
            sample = sample - self.shift
        return sample * self.scaling

    def latent_shape(self) -> tuple[int, ...]:
        if self.cached is not None:
            return tuple(self.cached[0].shape[1:])
        return tuple(self._encode(self.pixels[:1])[0].shape[1:])


class PromptSource:
    """Token ids of every caption for each of the family's tokenizers; the text conditioning cached once when
    the text encoders are frozen. A caption made at a step (its parts shuffled) is tokenized and embedded then."""

    def __init__(self, family: Family, parts: dict, captions: list[str], *, device: torch.device) -> None:
        self.family, self.parts, self.device = family, parts, device
        self.unique = sorted(set(captions))
        self.row_of = {caption: i for i, caption in enumerate(self.unique)}
        self.token_ids = family.tokenize(parts, self.unique, device)
        self.cached: Conditioning | None = None
        self.frozen_text_encoders: dict | None = None

    @torch.no_grad()
    def cache_embeddings(self, text_encoders: dict, dtype: torch.dtype) -> None:
        self.cached = self.family.encode_prompts(text_encoders, self.token_ids).to(dtype)
        self.frozen_text_encoders, self.dtype = text_encoders, dtype

    def rows(self, captions: list[str]) -> list[int]:
        return [self.row_of[caption] for caption in captions]

    def embeddings(self, captions: list[str], text_encoders: dict | None = None) -> Conditioning:
        if any(caption not in self.row_of for caption in captions):
            return self._encode_now(captions, text_encoders)
        rows = self.rows(captions)
        if self.cached is not None:
            return self.cached.rows(rows)
        return self.family.encode_prompts(text_encoders, {name: ids[rows] for name, ids in self.token_ids.items()})

    def _encode_now(self, captions: list[str], text_encoders: dict | None) -> Conditioning:
        token_ids = self.family.tokenize(self.parts, captions, self.device)
        if self.frozen_text_encoders is None:
            return self.family.encode_prompts(text_encoders, token_ids)
        with torch.no_grad():
            return self.family.encode_prompts(self.frozen_text_encoders, token_ids).to(self.dtype)


@dataclass
class Bucket:
    """The examples of one size: their latents, and the class images' latents at the same size."""

    size: Size  # (width, height)
    members: list[int]  # indices into the instance examples
    latents: LatentSource
    class_latents: LatentSource | None  # None without prior preservation
    latent_shape: tuple[int, ...]


@dataclass
class CaptionDraws:
    """kohya's caption dropout and part shuffling, per step."""

    dropout: float = 0.0
    shuffle_parts: bool = False

    @property
    def active(self) -> bool:
        return bool(self.dropout) or self.shuffle_parts

    def apply(self, captions: list[str], seed: int, micro_step: int, process_index: int) -> list[str]:
        # its own generator: the noise and timesteps of a step do not move when dropout is switched on
        rng = random.Random((seed * 1_000_003 + micro_step) * 1009 + process_index + 0x5EED)
        return [training_caption(caption, rng, dropout=self.dropout, shuffle=self.shuffle_parts)
                for caption in captions]


@dataclass
class TrainingData:
    """The examples as the loop draws them: latents to sample per bucket, captions to embed."""

    instance: Examples
    buckets: list[Bucket]
    class_prompt: str
    prompts: PromptSource
    caption_draws: CaptionDraws = field(default_factory=CaptionDraws)

    @property
    def has_prior(self) -> bool:
        return self.buckets[0].class_latents is not None

    def draw(self, micro_step: int, generator: torch.Generator, *, seed: int, per_process: int, process_index: int,
             num_processes: int) -> tuple[torch.Tensor, list[str], int, Bucket, list[int]]:
        """A process's share of a micro-batch as sampled latents, all from one bucket, instance examples first,
        then class examples with prior preservation. Returns (latents, the caption of each, number of instance
        examples, the bucket, the instance examples' indices).

        Every process draws the whole global batch's noise and caption draws from the same ``generator`` and
        keeps its own rows (see ``own_rows``): N processes at batch b see what one process at batch N*b sees,
        and one process draws exactly what it always did."""
        counts = [len(bucket.members) for bucket in self.buckets]
        global_batch = per_process * num_processes
        index, bucket_batch = bucket_step(micro_step, counts, global_batch, seed)
        bucket, own_seed = self.buckets[index], bucket_seed(seed, index)
        own = slice(process_index * per_process, (process_index + 1) * per_process)
        everyone = data_indices(bucket_batch, count=len(bucket.members), per_process=global_batch, process_index=0,
                                num_processes=1, seed=own_seed)  # the processes' slices, one after the other
        picked = everyone[own]
        noise = torch.randn((global_batch, *bucket.latent_shape), generator=generator)
        latents = [bucket.latents.sample(picked, noise[own])]
        all_examples = [bucket.members[i] for i in everyone]
        captions = [self.instance.captions[i] for i in all_examples]
        if self.caption_draws.active:
            captions = self.caption_draws.apply(captions, seed, micro_step, 0)
        captions = captions[own]
        if bucket.class_latents is not None:
            picked_class = data_indices(bucket_batch, count=bucket.class_latents.count, per_process=global_batch,
                                        process_index=0, num_processes=1, seed=own_seed + 1)[own]
            noise = torch.randn((global_batch, *bucket.latent_shape), generator=generator)
            latents.append(bucket.class_latents.sample(picked_class, noise[own]))
            captions += [self.class_prompt] * len(picked_class)
        return torch.cat(latents), captions, len(picked), bucket, all_examples[own]

    def geometry(self, examples: list[int], num_class: int) -> list[ImageGeometry | None]:
        """Each drawn example's photo geometry (class images and square-crop sets have none)."""
        known = self.instance.geometry
        return [known[i] if known else None for i in examples] + [None] * num_class


def encode_training_data(instance: Examples, class_images: ClassImages | None, *, class_prompt: str, family: Family,
                         parts: dict, frozen_text_encoders: dict | None, resolution: int, cache_latents: bool,
                         device: torch.device, dtype: torch.dtype, caption_draws: CaptionDraws | None = None,
                         ) -> TrainingData:
    """Instance and class images as latent sources per bucket (encoded once by the frozen VAE when
    ``cache_latents``), captions as token ids, embedded once by ``frozen_text_encoders`` (None: a text encoder
    trains, so the captions are embedded every step). ``parts`` are the base pipeline's components."""
    vae = parts["vae"]
    shift, scaling = family.latent_scaling(vae.config)
    caption_draws = caption_draws or CaptionDraws()

    def latents(paths: list[Path], size: int | Size) -> LatentSource:
        return LatentSource(vae, load_pixels(paths, size), cache=cache_latents, device=device, dtype=dtype,
                            shift=shift, scaling=scaling, distribution=family.latent_distribution)

    sizes = instance.sizes or [(resolution, resolution)] * len(instance)
    _check_sizes(instance.sizes or [], family)
    if class_images is not None and not class_images.images:
        raise HubtoolsError(f"no class images in {class_images.dir}: set prior.source to a folder of "
                            "class images, or delete that folder to generate them again")
    buckets = []
    for size in sorted(set(sizes), key=lambda s: (s[0] / s[1], s[0])):
        members = [i for i, own in enumerate(sizes) if own == size]
        pixels_size: int | Size = resolution if instance.sizes is None else size
        bucket_latents = latents([instance.images[i] for i in members], pixels_size)
        class_latents = None
        if class_images is not None:
            class_latents = latents(class_images.for_size(size), pixels_size)
        buckets.append(Bucket(size, members, bucket_latents, class_latents, bucket_latents.latent_shape()))
    captions = list(instance.captions)
    if class_images is not None:
        captions.append(class_prompt)
    if caption_draws.dropout:
        captions.append("")
    prompts = PromptSource(family, parts, captions, device=device)
    if frozen_text_encoders is not None:
        prompts.cache_embeddings(frozen_text_encoders, dtype)
    return TrainingData(instance, buckets, class_prompt, prompts, caption_draws)


def _check_sizes(sizes: list[Size], family: Family) -> None:
    multiple = family.size_multiple
    wrong = next((size for size in sizes if size[0] % multiple or size[1] % multiple), None)
    if wrong is not None:
        raise InputError(f"a concept image is {wrong[0]}x{wrong[1]}, but {family.title} needs sides that are "
                         f"multiples of {multiple}: prepare the set again with --size-multiple {multiple}")


def data_indices(micro_step: int, *, count: int, per_process: int, process_index: int, num_processes: int,
                 seed: int) -> list[int]:
    """Which examples a process takes at a micro-step: walk seeded per-epoch permutations of ``count``
    examples, ``per_process * num_processes`` at a time, each process taking its own slice (sharding)."""
    global_batch = per_process * num_processes
    start = micro_step * global_batch + process_index * per_process
    picked = []
    for position in range(start, start + per_process):
        epoch, offset = divmod(position, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        picked.append(int(order[offset]))
    return picked


def step_generator(seed: int, micro_step: int, process_index: int = 0) -> torch.Generator:
    """The generator for one micro-step's noise, timesteps and latent samples (CPU: same on every device).
    The trainer gives every process process 0's: each draws the global batch and keeps its rows."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step) * 1009 + process_index)


def own_rows(process_index: int, per_process: int, num_processes: int, *, with_prior: bool) -> list[int]:
    """Where a process's examples sit in the global batch as one process would lay it out: its instance
    examples among all instance examples, then its class examples among all class examples."""
    global_batch = per_process * num_processes
    rows = list(range(process_index * per_process, (process_index + 1) * per_process))
    return rows + [global_batch + row for row in rows] if with_prior else rows
