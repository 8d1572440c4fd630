"""Memory profiles: named bundles of the settings that trade speed for GPU memory.

``--memory auto`` picks the largest profile that fits the free GPU memory and says why; an explicit
``low|medium|high`` applies that profile; ``manual`` (the default) trains exactly as configured. When CUDA
runs out of memory the error names the next smaller profile to try.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

import torch

from hubtools.config import DEFAULT_LR, RunConfig
from hubtools.errors import HubtoolsError
from hubtools.families import Family, MemoryProfile, by_name

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


def choose_profile(cfg: RunConfig, device: torch.device, family: Family | str) -> MemoryChoice:
    """The profile for this run: as configured (manual), named, or picked from the free GPU memory (auto),
    from the profiles of the base model's ``family``."""
    training = cfg.training
    profiles = family_profiles(family)
    if training.memory == "manual":
        return _manual(cfg, "as configured")
    if training.memory != "auto":
        return _from_profile(_by_name(family)[training.memory], f"--memory {training.memory} was asked for")
    free = free_gpu_bytes(device)
    if free is None:
        return _manual(cfg, f"no GPU memory to size for on {device.type}: settings as configured")
    for profile in profiles:
        if free >= profile.min_free_gib * GIB:
            return _from_profile(profile, f"{free / GIB:.1f} GiB free GPU memory >= {profile.min_free_gib} GiB")
    smallest = profiles[-1]
    return _from_profile(smallest, f"only {free / GIB:.1f} GiB free GPU memory (< {smallest.min_free_gib} GiB): "
                                   "the smallest profile; lower --resolution if it still runs out")


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
    return HubtoolsError(f"{where}: already the smallest profile; lower --resolution or --batch-size, "
                         "or free GPU memory used by other processes")


def _manual(cfg: RunConfig, reason: str) -> MemoryChoice:
    training = cfg.training
    return MemoryChoice("manual", reason, training.method, training.use_8bit_adam, training.gradient_checkpointing)


def _from_profile(profile: MemoryProfile, reason: str) -> MemoryChoice:
    note = "" if not profile.use_8bit_adam or bitsandbytes_available() else " (bitsandbytes missing: plain AdamW)"
    return MemoryChoice(profile.name, f"{reason}: {profile.summary}{note}", profile.method,
                        profile.use_8bit_adam and bitsandbytes_available(), profile.gradient_checkpointing)
