"""Memory profiles: named bundles of the settings that trade speed for GPU memory.

``--memory auto`` picks the largest profile that fits the free GPU memory and says why (under ``--distributed
fsdp`` with N processes a profile needs its sharded part / N + the rest on each GPU: ``families.fits``); an explicit
``low|medium|high`` applies that profile; ``manual`` (the default) trains exactly as configured. When CUDA
runs out of memory the error names the next smaller profile to try.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

import torch

from hubtools import distributed
from hubtools.config import DEFAULT_LR, RunConfig
from hubtools.errors import HubtoolsError
from hubtools.families import Family, MemoryProfile, by_name
from hubtools.families.fits import fsdp_command, profile_estimate

GIB = 1024**3


def family_profiles(family: Family | str) -> list[MemoryProfile]:
    """The memory profiles of the base model's family (a ``Family`` or its registry name), largest first."""
    declared = (by_name(family) if isinstance(family, str) else family).memory_profiles
    return [row if isinstance(row, MemoryProfile) else MemoryProfile(*row) for row in declared]


def _by_name(family: Family | str) -> dict[str, MemoryProfile]:
    return {profile.name: profile for profile in family_profiles(family)}


@dataclass
class MemoryChoice:
    """What the trainer runs with, recorded in train_result.json as ``memory_profile``."""

    profile: str  # high|medium|low|manual
    reason: str
    method: str
    use_8bit_adam: bool
    gradient_checkpointing: bool

    def to_dict(self) -> dict:
        return asdict(self)


def free_gpu_bytes(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def _least_free(device: torch.device) -> int | None:
    """The free memory of this GPU; under several processes the least any of them has, so that every process
    picks the same profile (None: no GPU)."""
    free = distributed.each("measuring the free GPU memory", lambda: free_gpu_bytes(device))
    return None if any(value is None for value in free) else min(free)


def choose_profile(cfg: RunConfig, device: torch.device, family: Family | str, *, parameters: int | None = None,
                   shards: int = 1) -> MemoryChoice:
    """The profile for this run: as configured (manual), named, or picked from the free GPU memory (auto),
    from the profiles of the base model's ``family``. ``parameters``: of the trained component (the base model
    record's count; None: unknown); ``shards``: the processes FSDP splits it among (1: no FSDP)."""
    training = cfg.training
    if training.memory == "manual":
        return _manual(cfg, "as configured")
    if training.memory != "auto":
        return _from_profile(_by_name(family)[training.memory], f"--memory {training.memory} was asked for")
    free = _least_free(device)
    if free is None:
        return _manual(cfg, f"no GPU memory to size for on {device.type}: settings as configured")
    profile, reason = pick_profile(family_profiles(family), free, parameters=parameters, shards=shards)
    return _from_profile(profile, reason)


def profile_need(profile: MemoryProfile, parameters: int | None, shards: int = 1) -> int:
    """Bytes ``profile`` needs on each GPU: its ``min_free_gib``, or under FSDP (``shards`` > 1, the trained
    component's ``parameters`` known) its sharded part / shards + the rest (``families.fits``)."""
    if shards > 1 and parameters:
        return profile_estimate(profile, parameters).per_gpu(shards)
    return int(profile.min_free_gib * GIB)


def pick_profile(profiles: list[MemoryProfile], free: int, *, parameters: int | None = None,
                 shards: int = 1) -> tuple[MemoryProfile, str]:
    """``--memory auto``: the largest of ``profiles`` whose need on each GPU (``profile_need``) fits ``free``
    bytes, and why; when one that did not fit would under FSDP on more GPUs of this size, the reason says on how
    many. The smallest when none fits."""
    sharded = shards > 1 and bool(parameters)
    how = f", {shards} processes sharing the trained part under FSDP" if sharded else ""
    for index, profile in enumerate(profiles):
        need = profile_need(profile, parameters, shards)
        if free >= need:
            reason = f"{free / GIB:.1f} GiB free GPU memory >= {need / GIB:.1f} GiB{how}"
            return profile, reason + (_more_gpus(profiles[0], parameters, free, shards) if index else "")
    smallest = profiles[-1]
    need = profile_need(smallest, parameters, shards)
    more = _more_gpus(smallest, parameters, free, shards)
    return smallest, (f"only {free / GIB:.1f} GiB free GPU memory (< {need / GIB:.1f} GiB{how}): the smallest "
                      f"profile; lower --resolution if it still runs out{more}")


def _more_gpus(profile: MemoryProfile, parameters: int | None, free: int, shards: int) -> str:
    """'; ``profile`` fits on K GPUs of this size under FSDP (command)' when K is more than the run has."""
    if not parameters:
        return ""
    gpus = profile_estimate(profile, parameters).gpus_for(free)
    if gpus is None or gpus <= shards:
        return ""
    return (f"; {profile.name} ({profile.summary}) fits on {gpus} GPUs of {free / GIB:.0f} GiB under FSDP "
            f"({fsdp_command(gpus)})")


def apply_choice(cfg: RunConfig, choice: MemoryChoice) -> RunConfig:
    """A copy of ``cfg`` with the chosen profile's settings; the learning rate follows a method switch."""
    effective = cfg.model_copy(deep=True)
    training = effective.training
    if training.method != choice.method and training.learning_rate in (None, DEFAULT_LR[training.method]):
        training.learning_rate = DEFAULT_LR[choice.method]
    training.method = choice.method
    training.use_8bit_adam = choice.use_8bit_adam and bitsandbytes_available()
    training.gradient_checkpointing = choice.gradient_checkpointing
    if training.lora_alpha is None:
        training.lora_alpha = float(training.lora_rank)
    return effective


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def next_smaller_profile(cfg: RunConfig, choice: MemoryChoice, family: Family | str) -> str | None:
    """The profile to try after an out-of-memory error, or None when already at the smallest."""
    profiles = family_profiles(family)
    if choice.profile in _by_name(family):
        index = [p.name for p in profiles].index(choice.profile)
        return profiles[index + 1].name if index + 1 < len(profiles) else None
    if choice.method == "full":  # manual settings: the closest profile below them
        return "low" if choice.use_8bit_adam and choice.gradient_checkpointing else "medium"
    return None if choice.use_8bit_adam and choice.gradient_checkpointing else "low"


def out_of_memory_error(cfg: RunConfig, choice: MemoryChoice, step: int | None, family: Family | str) -> HubtoolsError:
    smaller = next_smaller_profile(cfg, choice, family)
    when = f"at step {step}" if step is not None else "while loading the models"
    where = f"CUDA ran out of memory {when} with the {choice.profile} memory profile ({choice.method})"
    if smaller:
        return HubtoolsError(f"{where}: retry with --memory {smaller} ({_by_name(family)[smaller].summary})")
    sharded = cfg.training.distributed == "fsdp" and distributed.world_size() > 1
    more = (f"run it on more GPUs ({distributed.world_size()} share the trained part now)" if sharded else
            "shard the trained part over several GPUs (torchrun --nproc-per-node N -m hubtools ... --distributed fsdp)")
    return HubtoolsError(f"{where}: already the smallest profile; lower --resolution or --batch-size, {more}, "
                         "or free GPU memory used by other processes")


def _manual(cfg: RunConfig, reason: str) -> MemoryChoice:
    training = cfg.training
    return MemoryChoice("manual", reason, training.method, training.use_8bit_adam, training.gradient_checkpointing)


def _from_profile(profile: MemoryProfile, reason: str) -> MemoryChoice:
    note = "" if not profile.use_8bit_adam or bitsandbytes_available() else " (bitsandbytes missing: plain AdamW)"
    return MemoryChoice(profile.name, f"{reason}: {profile.summary}{note}", profile.method,
                        profile.use_8bit_adam and bitsandbytes_available(), profile.gradient_checkpointing)
