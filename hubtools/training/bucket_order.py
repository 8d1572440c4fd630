"""Which bucket each micro-step draws from, and which examples of it: a pure function of (seed, step).

Every batch comes from one bucket (its latents share a shape). A round holds each bucket ``ceil(n / batch)``
times, in an order drawn from a generator seeded by (seed, round); within a bucket the examples are walked
through seeded per-epoch permutations (``data.data_indices``). Nothing depends on a running RNG, so a run resumed
after a kill draws exactly what an uninterrupted one would. With one bucket the round is that bucket every
time and the order is exactly the unbucketed one.
"""

from __future__ import annotations

import math

import torch

_ROUND_SEED = 1_000_033
_BUCKET_SEED = 7_919


def batches_per_round(counts: list[int], global_batch: int) -> list[int]:
    return [math.ceil(count / global_batch) for count in counts]


def round_order(round_index: int, counts: list[int], global_batch: int, seed: int) -> list[int]:
    """The bucket of each micro-step of one round, shuffled (one bucket: no draw at all)."""
    slots = [bucket for bucket, times in enumerate(batches_per_round(counts, global_batch)) for _ in range(times)]
    if len(counts) == 1:
        return slots
    order = torch.randperm(len(slots), generator=torch.Generator().manual_seed(seed * _ROUND_SEED + round_index))
    return [slots[int(i)] for i in order]


def bucket_step(micro_step: int, counts: list[int], global_batch: int, seed: int) -> tuple[int, int]:
    """(bucket, how many batches that bucket gave before this one) at ``micro_step``."""
    per_round = batches_per_round(counts, global_batch)
    round_index, offset = divmod(micro_step, sum(per_round))
    order = round_order(round_index, counts, global_batch, seed)
    bucket = order[offset]
    return bucket, round_index * per_round[bucket] + order[:offset].count(bucket)


def bucket_seed(seed: int, bucket: int) -> int:
    """The seed of a bucket's own example order (bucket 0: the run's seed, so one bucket is the old order)."""
    return seed + _BUCKET_SEED * bucket


__all__ = ["bucket_seed", "bucket_step", "round_order"]
