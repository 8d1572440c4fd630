"""Resumable checkpoints: written whole or not at all, the newest K kept, and refused on a changed config.

A checkpoint is ``RUN/checkpoints/checkpoint-NNNNNN/``: accelerate's state (optimizer, LR scheduler, RNG
states, grad scaler), the trainable weights as safetensors (``unet/`` and maybe ``text_encoder/`` for a
full fine-tune, ``pytorch_lora_weights.safetensors`` for LoRA; the sample stage renders these) and
``hubtools_state.json`` (step, the config that mattered, the memory profile, the data fingerprint).
Everything is written into ``.tmp-checkpoint-NNNNNN`` and renamed into place, so a crash or ``kill -9``
leaves either the old set of checkpoints or the new one, plus a temp folder that the next start removes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hubtools.atomic import replace_dir
from hubtools.config import RunConfig
from hubtools.runfolder import CHECKPOINT_STATE_FILENAME as STATE_FILENAME
from hubtools.runfolder import checkpoint_name, list_checkpoints

_TMP_PREFIX = ".tmp-checkpoint-"
_TRASH_PREFIX = ".old-checkpoint-"
_ASIDE_PREFIX = ".checkpoint-"  # replace_dir moves a checkpoint saved again at the same step aside here

# Settings that change nothing a checkpoint holds: a resume may change them freely.
_FREE_TO_CHANGE = {
    "training.checkpoint_every", "training.keep_checkpoints", "training.validation_every", "training.device",
    "prior.generation_batch_size", "concept.source", "concept.image_column", "concept.min_images",
    "concept.allow_upscale", "concept.strict",
}
_FREE_SECTIONS = {"sampling", "publish", "eval"}


def latest_checkpoint(checkpoints_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILENAME).read_text(encoding="utf-8"))


def remove_partial(checkpoints_dir: Path) -> list[Path]:
    """Delete what interrupted saves left behind; returns what was removed."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    leftovers = [p for p in checkpoints_dir.iterdir() if p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX, _ASIDE_PREFIX))]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def save_checkpoint(accelerator, checkpoints_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save the accelerate state of every process plus ``state``, atomically; keep the newest ``keep``.

    Call it on every process: accelerate writes per-process RNG states; the trainer's save hook writes the
    trainable weights on the main process only."""
    checkpoints_dir = Path(checkpoints_dir)
    final = checkpoints_dir / checkpoint_name(step)
    tmp = checkpoints_dir / f"{_TMP_PREFIX}{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILENAME).write_text(json.dumps(state, indent=2), encoding="utf-8")
        replace_dir(tmp, final)
        rotate_checkpoints(checkpoints_dir, keep)
    accelerator.wait_for_everyone()
    return final


def register_weight_hooks(accelerator, family, trained: dict[str, Any], *, lora: bool,
                          sharded_optimizer: Any = None) -> None:
    """Checkpoints hold only the trainable weights, as safetensors in diffusers layout (not accelerate's
    whole-model ``model.safetensors``: for LoRA that would be the frozen UNet again in every checkpoint).
    ``trained`` maps component names (denoiser first, then the text encoders that train) to the models.
    Under FSDP (``sharded_optimizer``) each process writes its shards of the weights and optimizer states
    (``training.sharding``) instead."""

    def save_hook(models, weights, output_dir):
        if sharded_optimizer is not None:
            from hubtools.training.sharding import save_sharded

            save_sharded(Path(output_dir), trained, sharded_optimizer)
        elif accelerator.is_main_process:
            out = Path(output_dir)
            if lora:
                from hubtools.training.lora import save_lora

                save_lora(out, family, trained)
            else:
                for name, model in trained.items():
                    model.save_pretrained(out / name, safe_serialization=True)
        weights.clear()  # accelerate must not save the models itself

    def load_hook(models, input_dir):
        models.clear()  # loaded here, not by accelerate
        folder = Path(input_dir)
        if sharded_optimizer is not None:
            from hubtools.training.sharding import load_sharded

            load_sharded(folder, trained, sharded_optimizer)
            return
        if lora:
            from hubtools.training.lora import load_lora_state

            load_lora_state(folder, trained)
            return
        for index, (name, model) in enumerate(trained.items()):
            # strict for the denoiser; text encoders may differ in buffers (position ids) between releases
            model.load_state_dict(_saved_weights(folder / name), strict=index == 0)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _saved_weights(folder: Path) -> dict[str, Any]:
    """Every tensor of a ``save_pretrained`` folder (one safetensors file, or the shards of a large model)."""
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(path))
    return state


def rotate_checkpoints(checkpoints_dir: Path, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` checkpoints (renamed aside first, so none is ever half-deleted)."""
    found = list_checkpoints(checkpoints_dir)
    for _step, path in found[:-keep] if keep else found:
        trash = path.with_name(_TRASH_PREFIX + path.name)
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return [step for step, _ in list_checkpoints(checkpoints_dir)]


def comparable_config(cfg: RunConfig) -> dict[str, Any]:
    """The settings a checkpoint depends on, flattened to dotted keys."""
    flat: dict[str, Any] = {}
    for section, values in cfg.model_dump(mode="json").items():
        if section in _FREE_SECTIONS:
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted not in _FREE_TO_CHANGE:
                flat[dotted] = value
    if cfg.training.lr_scheduler in ("constant",):
        flat.pop("training.steps", None)  # a constant schedule can be extended without changing the past
    return flat


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (ignoring ones only one side knows of as None)."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if old != new:
            changes.append(f"{key}: {old!r} -> {new!r}")
    return changes
