"""Training data: instance and class images as tensors, cached latents and text embeddings, data order.

The data order and every random draw of a step are functions of (seed, step, process), not of a running
RNG, so a run resumed from a checkpoint sees exactly the batches and noise an uninterrupted run would.
``encode_training_data`` builds what the loop draws from; ``TrainingData.draw`` is one micro-batch of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from hubtools.concepts.manifest import load_prepared_concept
from hubtools.errors import HubtoolsError, InputError

if TYPE_CHECKING:
    from hubtools.families import Conditioning, Family
    from hubtools.prior import ClassImages



@dataclass
class Examples:
    """One set of images (instance or class) and the caption of each."""

    images: list[Path]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)


def load_instance_examples(concept_dir: Path, default_caption: str) -> Examples:
    """The prepared concept set (an imagefolder); images without a caption get the instance prompt."""
    concept = load_prepared_concept(concept_dir)
    images = concept.images
    captions = [caption or default_caption for caption in concept.captions]
    if not images:
        raise InputError(f"the concept set in {concept_dir} has no images: add photos and prepare it again")
    return Examples(images, captions)


def concept_fingerprint(examples: Examples) -> str:
    """Changes when an image or caption changes: a resume must not silently train on different data."""
    digest = hashlib.sha256()
    for path, caption in zip(examples.images, examples.captions):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(caption.encode())
    return digest.hexdigest()[:16]


def load_pixels(paths: list[Path], resolution: int) -> torch.Tensor:
    """(N, 3, R, R) float tensor in [-1, 1]; images not already R x R are resized and centre-cropped."""
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (resolution, resolution):
                scale = resolution / min(image.size)
                size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BICUBIC)
                left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
                image = image.crop((left, top, left + resolution, top + resolution))
            array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        tensors.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(tensors)


class LatentSource:
    """Latent distributions (mean, std) of a set of images: encoded once when the VAE is frozen and
    ``cache`` is on, else per batch. Sampling uses the step's generator, so caching changes no result."""

    def __init__(self, vae, pixels: torch.Tensor, *, cache: bool, device: torch.device, dtype: torch.dtype,
                 shift: float | None, scaling: float, encode_batch_size: int = 8) -> None:
        self.vae, self.pixels, self.device, self.dtype = vae, pixels, device, dtype
        self.count = len(pixels)
        self.shift, self.scaling = shift, scaling  # the family's: latents are (sample - shift) * scaling
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None
        if cache:
            parts = [self._encode(pixels[i:i + encode_batch_size]) for i in range(0, len(pixels), encode_batch_size)]
            self.cached = (torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts]))
            self.pixels = None  # hundreds of class images at 512 px are gigabytes of host memory

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    the text encoders are frozen."""

    def __init__(self, family: Family, parts: dict, captions: list[str], *, device: torch.device) -> None:
        self.family = family
        self.unique = sorted(set(captions))
        self.row_of = {caption: i for i, caption in enumerate(self.unique)}
        self.token_ids = family.tokenize(parts, self.unique, device)
        self.cached: Conditioning | None = None

    @torch.no_grad()
    def cache_embeddings(self, text_encoders: dict, dtype: torch.dtype) -> None:
        self.cached = self.family.encode_prompts(text_encoders, self.token_ids).to(dtype)

    def rows(self, captions: list[str]) -> list[int]:
        return [self.row_of[caption] for caption in captions]

    def embeddings(self, captions: list[str], text_encoders: dict | None = None) -> Conditioning:
        rows = self.rows(captions)
        if self.cached is not None:
            return self.cached.rows(rows)
        return self.family.encode_prompts(text_encoders, {name: ids[rows] for name, ids in self.token_ids.items()})


@dataclass
class TrainingData:
    """The examples as the loop draws them: latents to sample, captions to embed."""

    instance: Examples
    instance_latents: LatentSource
    class_latents: LatentSource | None  # None without prior preservation
    class_prompt: str
    prompts: PromptSource
    latent_shape: tuple[int, ...]

    def draw(self, micro_step: int, generator: torch.Generator, *, seed: int, per_process: int, process_index: int,
             num_processes: int) -> tuple[torch.Tensor, list[str], int]:
        """A process's share of a micro-batch as sampled latents, instance examples first, then class
        examples with prior preservation. Returns (latents, the caption of each, number of instance examples)."""
        picked = data_indices(micro_step, count=len(self.instance), per_process=per_process,
                              process_index=process_index, num_processes=num_processes, seed=seed)
        latents = [self.instance_latents.sample(picked,
                                                torch.randn((len(picked), *self.latent_shape), generator=generator))]
        captions = [self.instance.captions[i] for i in picked]
        if self.class_latents is not None:
            picked_class = data_indices(micro_step, count=self.class_latents.count, per_process=per_process,
                                        process_index=process_index, num_processes=num_processes, seed=seed + 1)
            noise = torch.randn((len(picked_class), *self.latent_shape), generator=generator)
            latents.append(self.class_latents.sample(picked_class, noise))
            captions += [self.class_prompt] * len(picked_class)
        return torch.cat(latents), captions, len(picked)


def encode_training_data(instance: Examples, class_images: ClassImages | None, *, class_prompt: str, family: Family,
                         parts: dict, frozen_text_encoders: dict | None, resolution: int, cache_latents: bool,
                         device: torch.device, dtype: torch.dtype) -> TrainingData:
    """Instance and class images as latent sources (encoded once by the frozen VAE when ``cache_latents``),
    captions as token ids, embedded once by ``frozen_text_encoders`` (None: a text encoder trains, so the
    captions are embedded every step). ``parts`` are the base pipeline's components."""
    vae = parts["vae"]
    shift, scaling = family.latent_scaling(vae.config)

    def latents(paths: list[Path]) -> LatentSource:
        return LatentSource(vae, load_pixels(paths, resolution), cache=cache_latents, device=device, dtype=dtype,
                            shift=shift, scaling=scaling)

    instance_latents = latents(instance.images)
    class_latents = None
    captions = list(instance.captions)
    if class_images is not None:
        if not class_images.images:
            raise HubtoolsError(f"no class images in {class_images.dir}: set prior.source to a folder of "
                                "class images, or delete that folder to generate them again")
        class_latents = latents(class_images.images)
        captions.append(class_prompt)
    prompts = PromptSource(family, parts, captions, device=device)
    if frozen_text_encoders is not None:
        prompts.cache_embeddings(frozen_text_encoders, dtype)
    return TrainingData(instance, instance_latents, class_latents, class_prompt, prompts,
                        instance_latents.latent_shape())


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


def step_generator(seed: int, micro_step: int, process_index: int) -> torch.Generator:
    """The generator for one micro-step's noise, timesteps and latent samples (CPU: same on every device)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step) * 1009 + process_index)
