"""Sharded data parallelism (``--distributed fsdp``): PyTorch's FSDP2 (``fully_shard``) over the trained components.

Each process holds 1/N of the trained weights, their gradients and AdamW states; a block's weights are
gathered for its forward and backward only. Checkpoints are sharded too: ``torch.distributed.checkpoint``
writes each process's part of the weights and optimizer states into ``checkpoint-NNNNNN/sharded/`` and reads
them back on resume. The final weights are gathered into the usual safetensors files on the main process.

accelerate's FSDP plugin does the same on GPUs, but it does not engage on CPU (accelerate reports MULTI_CPU
and wraps in DDP), so the trainer calls ``fully_shard`` itself and hands accelerate only the LR schedule:
the same engine on every device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SHARDED_DIR = "sharded"  # in a checkpoint: torch.distributed.checkpoint's files, one set per process


def shard(models: dict[str, torch.nn.Module], device: torch.device) -> None:
    """``fully_shard`` every block of each model (the elements of its outermost ModuleLists: UNet down/up
    blocks, transformer blocks, text-encoder layers), then the model itself (what is left: embeddings, norms).
    A LoRA's frozen base in half precision beside its fp32 adapters is gathered in the base's dtype (FSDP
    gathers one dtype per block; the forward runs in it under autocast anyway) and reduced in fp32."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for model in models.values():
        dtypes = {p.dtype for p in model.parameters()}
        policy = MixedPrecisionPolicy()
        if len(dtypes) > 1:
            low = min(dtypes, key=lambda dtype: torch.finfo(dtype).bits)
            policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
        for block in _blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)


def _blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    found: list[torch.nn.Module] = []
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList):
            found.extend(block for block in child if any(True for _ in block.parameters()))
        else:
            found.extend(_blocks(child))
    return found


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _together(models: dict[str, torch.nn.Module]) -> torch.nn.Module:
    """The trained models as one module (keys ``<component>.<parameter>``): the optimizer spans them all."""
    return torch.nn.ModuleDict(models)


def save_sharded(folder: Path, models: dict[str, torch.nn.Module], optimizer) -> None:
    """Every process writes its shards of the weights and optimizer states (a collective: call it on all)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(_together(models), optimizer, options=_TRAINED_ONLY())
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(Path(folder) / SHARDED_DIR))


def load_sharded(folder: Path, models: dict[str, torch.nn.Module], optimizer) -> None:
    """Read the shards ``save_sharded`` wrote back into the models and the optimizer (on all processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    together = _together(models)
    model_state, optimizer_state = get_state_dict(together, optimizer, options=_TRAINED_ONLY())
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(Path(folder) / SHARDED_DIR))
    set_state_dict(together, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_TRAINED_ONLY())


def _TRAINED_ONLY():  # noqa: N802 - a constant built on use (torch is imported late)
    """Checkpoints hold what trains: a LoRA's frozen base is the base model's, read from it again on resume."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False)


def gathered(models: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module] | None:
    """The trained models whole, as plain (unsharded) modules of their own classes, on the main process (None on
    the others). A collective: every process calls it."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    whole: dict[str, torch.nn.Module] = {}
    for name, model in models.items():
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.get_rank() == 0:
            whole[name] = _unsharded_copy(model, state)
    return whole if dist.get_rank() == 0 else None


def _unsharded_copy(model: torch.nn.Module, state: dict[str, Any]) -> torch.nn.Module:
    """A plain module of ``model``'s own class holding ``state``; with LoRA adapters, the same adapters, built on
    the meta device and given the gathered tensors (no second copy of a large frozen base)."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))  # fully_shard subclassed it
    adapters = getattr(model, "peft_config", None) or {}

    def build() -> torch.nn.Module:
        return cls.from_config(model.config) if hasattr(cls, "from_config") else cls(model.config)

    if not adapters:
        copy = build()
        copy.load_state_dict(state)
        return copy.to(torch.float32)
    with torch.device("meta"):
        copy = build()
        for name, config in adapters.items():
            copy.add_adapter(config, adapter_name=name)
    copy.load_state_dict(state, assign=True)
    return copy
