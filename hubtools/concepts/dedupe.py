"""Spotting the same photo twice: perceptual hashes (pHash + dHash) and their distance.

A resized, recompressed or re-encoded copy of a photo has nearly the same hashes; two different shots
of the same dog from a similar angle usually do not. Both hashes must agree before a pair is called a
near duplicate, which keeps false alarms (a lost training photo) rare.

The two hashes are the published ones (hackerfactor's "Looks Like It" pHash and "Kind of Like That" dHash),
computed bit for bit as the ``imagehash`` package computes them (LANCZOS thumbnails, an unnormalised DCT-II
over rows then columns, the low 8x8 frequencies against their median), with numpy alone: ``imagehash``
needs scipy, and scipy installed makes diffusers and transformers import ``scipy.stats`` and
``scipy.optimize`` (about 2 CPU-seconds) at the start of every training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

HASH_SIZE = 8  # 64-bit hashes
HIGHFREQ_FACTOR = 4  # pHash's DCT runs over a 32x32 thumbnail
# Max differing bits (of 64) in BOTH hashes for a near duplicate. Recompressed/resized copies measure 0-4;
# distinct shots of the same subject measured 20+ (see tests and the demo dog set).
NEAR_DUPLICATE_BITS = 6
# Both hashes see brightness only, so plain or low-detail pictures in different colours hash alike; a
# 4x4 colour thumbnail must also match (mean absolute difference per channel, 0-255).
NEAR_DUPLICATE_COLOUR = 24.0  # a +10% brightness edit measures 11-17


@dataclass(frozen=True)
class PerceptualHash:
    phash: int  # HASH_SIZE**2 bits, row-major, the first bit the highest
    dhash: int
    colours: bytes  # 4x4 RGB thumbnail

    def distance(self, other: PerceptualHash) -> int:
        """The larger of the two Hamming distances: near only when both hashes say so."""
        return max((self.phash ^ other.phash).bit_count(), (self.dhash ^ other.dhash).bit_count())

    def colour_difference(self, other: PerceptualHash) -> float:
        mine = np.frombuffer(self.colours, dtype=np.uint8).astype(np.int16)
        theirs = np.frombuffer(other.colours, dtype=np.uint8).astype(np.int16)
        return float(np.abs(mine - theirs).mean())

    def is_near(self, other: PerceptualHash, max_bits: int = NEAR_DUPLICATE_BITS) -> bool:
        return self.distance(other) <= max_bits and self.colour_difference(other) <= NEAR_DUPLICATE_COLOUR


def _bits(diff: np.ndarray) -> int:
    return int("".join("1" if bit else "0" for bit in diff.flatten()), 2)


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """scipy.fftpack.dct's type II, unnormalised: y[k] = 2 * sum_i x[i] cos(pi k (2i + 1) / (2n))."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def phash(image: Image.Image, hash_size: int = HASH_SIZE) -> int:
    size = hash_size * HIGHFREQ_FACTOR
    pixels = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix(size)
    low = (dct @ pixels @ dct.T)[:hash_size, :hash_size]  # DCT of the columns (axis 0), then of the rows
    return _bits(low > np.median(low))


def dhash(image: Image.Image, hash_size: int = HASH_SIZE) -> int:
    pixels = np.asarray(image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS))
    return _bits(pixels[:, 1:] > pixels[:, :-1])


def perceptual_hash(image: Image.Image) -> PerceptualHash:
    colours = image.convert("RGB").resize((4, 4), Image.Resampling.BOX).tobytes()
    return PerceptualHash(phash=phash(image), dhash=dhash(image), colours=colours)
