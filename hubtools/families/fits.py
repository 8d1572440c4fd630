"""What training holds on each GPU, whole or sharded with FSDP (``--distributed fsdp``), and whether a full
fine-tune of a large base fits the GPUs at hand.

An estimate has two parts: what FSDP splits among the processes (the trained component's weights, gradients and
optimizer states; under LoRA the frozen component itself, which is sharded with its adapters) and what every
GPU holds whole (frozen text encoders and VAE, activations, the block being gathered). Per GPU, with N
processes: sharded / N + whole. The memory profiles (``training/memory.py``) and the full-fine-tune refusal
below both use it. Torch-free arithmetic; only ``check_full_fine_tune`` asks CUDA for the free memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hubtools.errors import ConfigError

if TYPE_CHECKING:  # importing a family imports no torch
    import torch

    from hubtools.families.base import MemoryProfile

GIB = 1024**3
# A full fine-tune holds fp32 weights, gradients and two AdamW moments: 16 bytes a parameter (sharded by FSDP);
# bitsandbytes' 8-bit AdamW keeps its two moments in one byte each: 10.
FULL_BYTES_PER_PARAMETER = 16
FULL_8BIT_BYTES_PER_PARAMETER = 10
# A LoRA's frozen component in bf16 (its adapters and their AdamW states are a rounding error beside it).
LORA_BYTES_PER_PARAMETER = 2
# What every GPU holds whole beside its shard of a full fine-tune: the frozen text encoders and VAE in half
# precision, activations with gradient checkpointing, the block being gathered. An estimate until benchmarks/
# measures it.
UNSHARDED_GIB = {"FLUX.1": 14.0}
DEFAULT_UNSHARDED_GIB = 10.0
ASSUMED_GPU_GIB = 80  # the size named when there is no GPU here to measure


@dataclass(frozen=True)
class GpuMemoryEstimate:
    """Bytes a training run needs on each GPU: ``sharded`` is split among the processes under FSDP, ``whole``
    is held by every GPU."""

    sharded: int
    whole: int

    def per_gpu(self, shards: int = 1) -> int:
        """On each of ``shards`` GPUs under FSDP (1: one GPU, or DDP, where every GPU holds everything)."""
        return -(-self.sharded // max(1, shards)) + self.whole

    def gpus_for(self, size: int) -> int | None:
        """The fewest GPUs of ``size`` bytes that hold it under FSDP; None when the whole part alone is too much."""
        room = size - self.whole
        return max(1, -(-self.sharded // room)) if room > 0 else None


def trained_bytes(parameters: int, method: str, use_8bit_adam: bool = False) -> int:
    """What FSDP shards of a component of ``parameters`` trained with ``method``."""
    if method == "full":
        return parameters * (FULL_8BIT_BYTES_PER_PARAMETER if use_8bit_adam else FULL_BYTES_PER_PARAMETER)
    return parameters * LORA_BYTES_PER_PARAMETER


def profile_estimate(profile: MemoryProfile, parameters: int) -> GpuMemoryEstimate:
    """A memory profile's need split in two: the trained component of ``parameters`` (sharded under FSDP) and
    the rest of what the profile is meant for (``min_free_gib`` on one GPU), held whole."""
    sharded = trained_bytes(parameters, profile.method, profile.use_8bit_adam)
    return GpuMemoryEstimate(sharded, max(0, int(profile.min_free_gib * GIB) - sharded))


def full_fine_tune_estimate(title: str, parameters: int) -> GpuMemoryEstimate:
    return GpuMemoryEstimate(parameters * FULL_BYTES_PER_PARAMETER,
                             int(UNSHARDED_GIB.get(title, DEFAULT_UNSHARDED_GIB) * GIB))


def fsdp_command(gpus: int) -> str:
    return f"torchrun --nproc-per-node {gpus} -m hubtools ... --distributed fsdp"


def full_fine_tune_refusal(title: str, parameters: int, free: int | None, shards: int = 1) -> str | None:
    """Why a full fine-tune of ``parameters`` does not fit ``free`` bytes on each of ``shards`` GPUs (None: no GPU
    here), naming how many GPUs of that size would hold it under FSDP; None when it fits."""
    estimate = full_fine_tune_estimate(title, parameters)
    if free and free >= estimate.per_gpu(shards):
        return None
    size = free or ASSUMED_GPU_GIB * GIB
    gpus = estimate.gpus_for(size)
    gpus = max(2, gpus) if gpus is not None else None
    where = (f"{free / GIB:.0f} GiB free on this GPU" + (f", x {shards} processes" if shards > 1 else "")
             if free else "no GPU here")
    sized = f"GPUs of {size / GIB:.0f} GiB"
    sharding = f"sharded with FSDP it fits on {gpus} {sized} ({fsdp_command(gpus)}), or " if gpus else ""
    return (f"a full fine-tune of {title} ({parameters / 1e9:.1f}B parameters) needs about "
            f"{estimate.sharded / GIB:.0f} GiB of GPU memory for weights, gradients and AdamW states, and "
            f"~{estimate.whole / GIB:.0f} GiB more on each GPU ({where}): {sharding}train a LoRA instead "
            "(--method lora)")


def check_full_fine_tune(title: str, parameters: int, device: torch.device, shards: int = 1) -> None:
    """Raise ``ConfigError`` when a full fine-tune of ``parameters`` does not fit: on one GPU, or on ``shards``
    GPUs under FSDP (each: its share of the weights, gradients and AdamW states, plus what stays whole). The
    message names how many GPUs of the size found would hold it under FSDP."""
    import torch

    free = int(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else None
    refusal = full_fine_tune_refusal(title, parameters, free, shards)
    if refusal:
        raise ConfigError(refusal)
