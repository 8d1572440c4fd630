"""Spotting the same photo twice: perceptual hashes (pHash + dHash) and their Hamming distance.

A resized, recompressed or re-encoded copy of a photo has nearly the same hashes; two different shots
of the same dog from a similar angle usually do not. Both hashes must agree before a pair is called a
near duplicate, which keeps false alarms (a lost training photo) rare. Written over PIL + numpy because
the ``imagehash`` package pulls in scipy and PyWavelets for these few lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

HASH_SIZE = 8  # 64-bit hashes
# Max differing bits (of 64) in BOTH hashes for a near duplicate. Recompressed/resized copies measure 0-4;
# distinct shots of the same subject measured 20+ (see tests and the demo dog set).
NEAR_DUPLICATE_BITS = 6
# Both hashes see brightness only, so plain or low-detail pictures in different colours hash alike; a
# 4x4 colour thumbnail must also match (mean absolute difference per channel, 0-255).
NEAR_DUPLICATE_COLOUR = 24.0  # a +10% brightness edit measures 11-17


@dataclass(frozen=True)
class PerceptualHash:
    phash: int
    dhash: int
    colours: bytes  # 4x4 RGB thumbnail

    def distance(self, other: PerceptualHash) -> int:
        """The larger of the two Hamming distances: near only when both hashes say so."""
        return max(bin(self.phash ^ other.phash).count("1"), bin(self.dhash ^ other.dhash).count("1"))

    def colour_difference(self, other: PerceptualHash) -> float:
        mine = np.frombuffer(self.colours, dtype=np.uint8).astype(np.int16)
        theirs = np.frombuffer(other.colours, dtype=np.uint8).astype(np.int16)
        return float(np.abs(mine - theirs).mean())

    def is_near(self, other: PerceptualHash, max_bits: int = NEAR_DUPLICATE_BITS) -> bool:
        return self.distance(other) <= max_bits and self.colour_difference(other) <= NEAR_DUPLICATE_COLOUR


def perceptual_hash(image: Image.Image) -> PerceptualHash:
    gray = image.convert("L")
    colours = image.convert("RGB").resize((4, 4), Image.Resampling.BOX).tobytes()
    return PerceptualHash(phash=_phash(gray), dhash=_dhash(gray), colours=colours)


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value


def _dhash(gray: Image.Image) -> int:
    # Brightness gradient between horizontal neighbours on a 9x8 thumbnail.
    small = np.asarray(gray.resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.LANCZOS), dtype=np.float64)
    return _bits_to_int(small[:, 1:] > small[:, :-1])


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


def _phash(gray: Image.Image) -> int:
    # Low frequencies of a 32x32 DCT compared with their median (the classic pHash).
    n = HASH_SIZE * 4
    pixels = np.asarray(gray.resize((n, n), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix(n)
    low = (dct @ pixels @ dct.T)[:HASH_SIZE, :HASH_SIZE]
    return _bits_to_int(low > np.median(low))
