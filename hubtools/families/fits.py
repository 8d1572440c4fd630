"""Whether a full fine-tune of a large base fits the GPUs at hand, whole or sharded with FSDP (``--distributed fsdp``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubtools.errors import ConfigError

if TYPE_CHECKING:  # importing a family imports no torch
    import torch

GIB = 1024**3
# A full fine-tune holds fp32 weights, gradients and two AdamW moments: 16 bytes a parameter (sharded by FSDP).
FULL_BYTES_PER_PARAMETER = 16
# What every GPU holds whole beside its shard: the frozen text encoders and VAE in half precision, activations
# with gradient checkpointing, the block being gathered. An estimate until benchmarks/ measures it.
UNSHARDED_GIB = {"FLUX.1": 14.0}
DEFAULT_UNSHARDED_GIB = 10.0
ASSUMED_GPU_GIB = 80  # the size named when there is no GPU here to measure


def check_full_fine_tune(title: str, parameters: int, device: torch.device, shards: int = 1) -> None:
    """Raise ``ConfigError`` when a full fine-tune of ``parameters`` does not fit: on one GPU, or on ``shards``
    GPUs under FSDP (each: its share of the weights, gradients and AdamW states, plus what stays whole). The
    message names how many GPUs of the size found would hold it under FSDP."""
    import torch

    sharded = parameters * FULL_BYTES_PER_PARAMETER
    rest = int(UNSHARDED_GIB.get(title, DEFAULT_UNSHARDED_GIB) * GIB) if shards > 1 else 0
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    if free and free >= -(-sharded // shards) + rest:
        return
    size = free or ASSUMED_GPU_GIB * GIB
    room = size - int(UNSHARDED_GIB.get(title, DEFAULT_UNSHARDED_GIB) * GIB)
    gpus = max(2, -(-sharded // room)) if room > 0 else None
    where = (f"{free / GIB:.0f} GiB free on this GPU" + (f", x {shards} processes" if shards > 1 else "")
             if device.type == "cuda" else "no GPU here")
    sized = f"GPUs of {free / GIB:.0f} GiB" if free else f"GPUs of {ASSUMED_GPU_GIB} GiB"
    sharding = (f"sharded with FSDP it fits on {gpus} {sized} (torchrun --nproc-per-node {gpus} -m hubtools ... "
                "--distributed fsdp), or " if gpus else "")
    raise ConfigError(
        f"a full fine-tune of {title} ({parameters / 1e9:.1f}B parameters) needs about {sharded / GIB:.0f} GiB "
        f"of GPU memory for weights, gradients and AdamW states ({where}): {sharding}train a LoRA instead "
        "(--method lora)"
    )
