"""Spotting the same photo twice: perceptual hashes (pHash + dHash, from ``imagehash``) and their distance.

A resized, recompressed or re-encoded copy of a photo has nearly the same hashes; two different shots
of the same dog from a similar angle usually do not. Both hashes must agree before a pair is called a
near duplicate, which keeps false alarms (a lost training photo) rare.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
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
    phash: imagehash.ImageHash
    dhash: imagehash.ImageHash
    colours: bytes  # 4x4 RGB thumbnail

    def distance(self, other: PerceptualHash) -> int:
        """The larger of the two Hamming distances: near only when both hashes say so."""
        return int(max(self.phash - other.phash, self.dhash - other.dhash))

    def colour_difference(self, other: PerceptualHash) -> float:
        mine = np.frombuffer(self.colours, dtype=np.uint8).astype(np.int16)
        theirs = np.frombuffer(other.colours, dtype=np.uint8).astype(np.int16)
        return float(np.abs(mine - theirs).mean())

    def is_near(self, other: PerceptualHash, max_bits: int = NEAR_DUPLICATE_BITS) -> bool:
        return self.distance(other) <= max_bits and self.colour_difference(other) <= NEAR_DUPLICATE_COLOUR


def perceptual_hash(image: Image.Image) -> PerceptualHash:
    colours = image.convert("RGB").resize((4, 4), Image.Resampling.BOX).tobytes()
    return PerceptualHash(
        phash=imagehash.phash(image, hash_size=HASH_SIZE),
        dhash=imagehash.dhash(image, hash_size=HASH_SIZE),
        colours=colours,
    )
