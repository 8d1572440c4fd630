"""Resume or start over, decided before any model is loaded.

A resume continues from the newest complete checkpoint and is refused when a setting the checkpoint
depends on changed (unless forced); starting over is refused while an earlier training's checkpoints are
there (unless forced, which deletes them). The memory profile is fixed here too: a resumed ``auto`` run
keeps the pick recorded in its checkpoint. What a checkpoint records (``checkpoint_state``) and what a
resume reads back live side by side in this module.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hubtools
from hubtools.config import RunConfig
from hubtools.errors import ConfigError, first_line
from hubtools.families import Family
from hubtools.runfolder import RunFolder
from hubtools.training import checkpoints as ckpt
from hubtools.training.memory import MemoryChoice, apply_choice, choose_profile


@dataclass
class TrainingPlan:
    """Where a run starts and the settings it trains with."""

    trained_config: RunConfig  # the run's config with the memory profile applied (and a resumed run's base revision)
    choice: MemoryChoice
    checkpoint_config: dict[str, Any]  # the settings this run's checkpoints record and a resume must match
    resume_from: tuple[int, Path] | None  # (step, folder) of the checkpoint to continue from; None: from scratch


def plan_training(cfg: RunConfig, folder: RunFolder, accelerator, *, concept_fingerprint: str, resume: bool,
                  force: bool, family: Family, parameters: int | None = None) -> TrainingPlan:
    """Clear what interrupted saves left, then resume from the newest checkpoint or start over. Every
    process decides the same; only the main process deletes. ``parameters``: of the trained component, for
    ``--memory auto`` under FSDP."""
    checkpoint_config = {**ckpt.comparable_config(cfg), "concept images": concept_fingerprint,
                         "num_processes": accelerator.num_processes}
    if accelerator.is_main_process:
        ckpt.remove_partial(folder.checkpoints)
    accelerator.wait_for_everyone()
    shards = accelerator.num_processes if cfg.training.distributed == "fsdp" else 1
    sizing = {"parameters": parameters, "shards": shards}
    resume_from: tuple[int, Path] | None = None
    pinned_revision: str | None = None
    if resume:  # a run stopped before its first checkpoint has none: it starts over, in the same folder
        resume_from = ckpt.latest_checkpoint(folder.checkpoints)
    if resume_from is not None:
        state = ckpt.read_state(resume_from[1])
        changes = ckpt.config_changes(state["config"], checkpoint_config)
        if changes and not force:
            raise ConfigError(f"the config changed since {resume_from[1].name}: {'; '.join(changes)} "
                              "(restore it, or pass --force to resume with the new settings)")
        # auto picked from the free memory of that day: keep its pick; anything else follows the config
        choice = (MemoryChoice(**state["memory_choice"]) if cfg.training.memory == "auto"
                  else choose_profile(cfg, accelerator.device, family, **sizing))
        pinned_revision = state.get("base_revision")
    else:
        _clear_earlier_training(folder, accelerator, force=force)
        choice = choose_profile(cfg, accelerator.device, family, **sizing)
    effective = apply_choice(cfg, choice)
    if pinned_revision and not effective.model.revision:
        effective.model.revision = pinned_revision  # the frozen parts must be the ones the checkpoint saw
    return TrainingPlan(effective, choice, checkpoint_config, resume_from)


def _clear_earlier_training(folder: RunFolder, accelerator, *, force: bool) -> None:
    """An earlier training's checkpoints are deleted only when forced: they may be hours of work."""
    if ckpt.list_checkpoints(folder.checkpoints) and not force:
        raise ConfigError(f"{folder.root} already has checkpoints of an earlier training: continue it with "
                          "--resume, or pass --force to start over")
    if accelerator.is_main_process and folder.checkpoints.exists():
        shutil.rmtree(folder.checkpoints)


def load_checkpoint(accelerator, checkpoint: Path) -> None:
    """accelerate's state: the trainable weights (through the trainer's load hook), optimizer, LR schedule
    and RNG states. Call it after ``accelerator.prepare``."""
    try:
        accelerator.load_state(str(checkpoint))
    except (OSError, KeyError, ValueError, RuntimeError) as error:  # forced past a change it cannot absorb
        raise ConfigError(f"{checkpoint.name} cannot be loaded with the current settings ({first_line(error)[:200]}): "
                          "restore the settings it was trained with, or start over with --force") from None


def checkpoint_state(plan: TrainingPlan, step: int, *, class_images_key: str | None,
                     base_revision: str | None) -> dict[str, Any]:
    """``hubtools_state.json`` of the checkpoint at ``step``: what ``plan_training`` checks and restores."""
    return {
        "step": step, "config": plan.checkpoint_config, "memory_choice": plan.choice.to_dict(),
        "class_images_key": class_images_key,
        "base_revision": base_revision,
        "hubtools_version": hubtools.__version__,
    }
