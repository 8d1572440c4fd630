"""Aspect-ratio buckets: photos keep their shape instead of being cut to a centre square.

A bucket is a training size (width x height) of about the target area (``resolution`` squared) whose sides
are multiples of what the model family needs (its VAE factor times its patch size). Each photo goes to the
bucket whose aspect ratio is nearest its own, is resized to cover it and cropped by the least, the way
kohya-ss, SimpleTuner and diffusers' DreamBooth scripts bucket. Pure arithmetic and one PIL resize: no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image

from hubtools.errors import ConfigError

# The longest side over the shortest of an automatic bucket (kohya's default range is about 1:2 to 2:1).
MAX_ASPECT = 2.0
# Automatic buckets step by about this fraction of the side (64 px at 1024, kohya's bucket_reso_steps).
STEP_FRACTION = 16
# The bucket multiple ``concept prepare`` uses when no base model says otherwise: every family here divides it.
DEFAULT_SIZE_MULTIPLE = 16
OFF = "off"
AUTO = "auto"

# Where the kept part sits inside the resized image, as fractions of the spare width and height.
CROP_ANCHORS = {"center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5), "right": (1.0, 0.5)}


@dataclass(frozen=True, order=True)
class Bucket:
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"

    def as_list(self) -> list[int]:
        return [self.width, self.height]

    def as_tuple(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class ImageGeometry:
    """Where a training image came from, for SDXL's micro-conditioning: the photo's size and the corner of the
    part kept, in the pixels of the photo resized to cover its bucket."""

    original_size: tuple[int, int]  # (width, height) of the photo
    crop_top_left: tuple[int, int]  # (top, left)


def square(resolution: int) -> Bucket:
    return Bucket(resolution, resolution)


def auto_buckets(resolution: int, multiple: int, *, max_aspect: float = MAX_ASPECT) -> list[Bucket]:
    """Buckets of at most ``resolution``\u00b2 pixels, sides multiples of ``multiple``, aspect within
    1:``max_aspect``: the square, then for each narrower width the tallest height that fits the area, and
    the same turned on its side. The step between widths is about 1/16 of the side (never below ``multiple``)."""
    step = max(multiple, round(resolution / STEP_FRACTION / multiple) * multiple)
    area = resolution * resolution
    buckets = {square(resolution)}
    width = resolution - step
    while width >= multiple:
        height = (area // width) // multiple * multiple
        if height / width > max_aspect:
            break
        buckets.add(Bucket(width, height))
        buckets.add(Bucket(height, width))
        width -= step
    return sorted(buckets, key=lambda b: (b.aspect, b.width))


def parse_buckets(text: str, multiple: int) -> list[Bucket]:
    """``"1024x1024,832x1216,1216x832"`` (width x height) as buckets; each side a multiple of ``multiple``."""
    buckets = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)\s*[x\u00d7]\s*(\d+)", part)
        if not match:
            raise ConfigError(f"--buckets: {part!r} is not WIDTHxHEIGHT; write e.g. \"1024x1024,832x1216,1216x832\", "
                              "auto or off")
        bucket = Bucket(int(match[1]), int(match[2]))
        if bucket.width % multiple or bucket.height % multiple or min(bucket.width, bucket.height) < multiple:
            raise ConfigError(f"--buckets: {bucket.label} must have sides that are multiples of {multiple} "
                              "(the model's VAE factor times its patch size)")
        buckets.append(bucket)
    return sorted(set(buckets), key=lambda b: (b.aspect, b.width))


def resolve_buckets(setting: str | None, resolution: int, multiple: int) -> list[Bucket] | None:
    """The bucket list a setting names: None for ``off`` (today's square crop), the automatic list for
    ``auto`` (or unset), else the given list."""
    value = (setting or AUTO).strip().lower()
    if value == OFF:
        return None
    if value == AUTO:
        return auto_buckets(resolution, multiple)
    return parse_buckets(value, multiple)


def crop_loss(size: tuple[int, int], bucket: Bucket) -> float:
    """The share of a ``size`` (width, height) photo's area that covering ``bucket`` crops away."""
    ratio = (size[0] / size[1]) / bucket.aspect
    return 1.0 - min(ratio, 1 / ratio)


def nearest_bucket(size: tuple[int, int], buckets: list[Bucket]) -> Bucket:
    """The bucket that crops the least of a (width, height) photo; on a tie the larger, then the wider one."""
    return min(buckets, key=lambda b: (round(crop_loss(size, b), 9), -b.width * b.height, -b.width))


def crop_box(size: tuple[int, int], bucket: Bucket, crop: str = "center") -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in the photo's pixels: the largest part of the bucket's aspect ratio,
    anchored as ``crop`` says (the square crop of ``--buckets off`` is the same box for a square bucket)."""
    width, height = size
    if bucket.width == bucket.height:
        keep_w = keep_h = min(width, height)
    elif width / height > bucket.aspect:  # wider than the bucket: crop the sides
        keep_w, keep_h = min(width, round(height * bucket.aspect)), height
    else:
        keep_w, keep_h = width, min(height, round(width / bucket.aspect))
    fx, fy = CROP_ANCHORS[crop]
    left, top = round((width - keep_w) * fx), round((height - keep_h) * fy)
    return left, top, left + keep_w, top + keep_h


def fit_to_bucket(image: Image.Image, bucket: Bucket, crop: str = "center") -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The image resized to cover ``bucket`` and cropped by the least; returns it and the crop box used."""
    box = crop_box(image.size, bucket, crop)
    # reducing_gap lets Pillow shrink by integer steps first: faster, same result class, deterministic.
    resized = image.resize((bucket.width, bucket.height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return resized, box


def scale_box(box: tuple[int, int, int, int], decoded: tuple[int, int], original: tuple[int, int]) -> list[int]:
    """A box in the decoded image's pixels (a JPEG may be decoded reduced) in the original photo's pixels."""
    sx, sy = original[0] / decoded[0], original[1] / decoded[1]
    return [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]


def covers(size: tuple[int, int], bucket: Bucket) -> bool:
    """Whether a photo is large enough to cover ``bucket`` without upscaling."""
    scale = max(bucket.width / size[0], bucket.height / size[1])
    return scale <= 1.0 + 1e-9


def distribute(total: int, weights: dict[Bucket, int]) -> dict[Bucket, int]:
    """``total`` split over the buckets in proportion to ``weights`` (largest remainders), at least one each."""
    buckets = sorted(weights, key=lambda b: (b.aspect, b.width))
    whole = sum(weights.values())
    exact = {b: total * weights[b] / whole for b in buckets}
    shares = {b: max(1, math.floor(exact[b])) for b in buckets}
    for bucket in sorted(buckets, key=lambda b: -(exact[b] - math.floor(exact[b]))):
        if sum(shares.values()) >= total:
            break
        shares[bucket] += 1
    return shares


__all__ = [
    "AUTO", "Bucket", "CROP_ANCHORS", "ImageGeometry", "DEFAULT_SIZE_MULTIPLE", "OFF", "auto_buckets", "covers", "crop_box", "crop_loss",
    "distribute", "fit_to_bucket", "nearest_bucket", "parse_buckets", "resolve_buckets", "scale_box", "square",
]
