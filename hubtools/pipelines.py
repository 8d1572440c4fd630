"""Loading pipelines: the base model a run starts from (pinned to the commit its record resolved to) and the
trained model of a run.

The base model is resolved once (``hubtools.base_model``: family, commit, trained component's size) into the
run's ``base_model.json``; loading reads that record and uses its family's pipeline class."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hubtools.base_model import (  # noqa: F401 (re-exported: the resolution steps loading builds on)
    BaseModelRecord, check_model_reference, family_of, read_denoiser_config, read_model_index, record_of_run,
    resolve_base_model_record, resolve_base_revision,
)
from hubtools.config import RUN_CONFIG_FILENAME, ModelConfig, load_run_config
from hubtools.devices import dtype_kwargs, resolve_device
from hubtools.errors import ConfigError, first_line
from hubtools.families import Family, apply_family_defaults
from hubtools.families.tokenizers import take_loaded_tokenizers
from hubtools.runfolder import LORA_WEIGHTS_FILENAME, RunFolder


@dataclass
class BaseModel:
    """The parts of a base pipeline a DreamBooth run needs, and where they came from."""

    model_id: str
    revision: str | None  # the commit sha actually loaded (None for a local folder)
    pipeline: Any  # a diffusers pipeline of the family's class
    family: Family
    record: BaseModelRecord | None = None  # what preflight resolved (None: a pipeline built in memory)


# SD 1.x's UNet has ~860M parameters, FLUX.1's transformer 12B; the tiny models a few million. Anything this
# large is far too slow to train on a CPU.
FULL_SIZE_PARAMETERS = 100_000_000


def check_device_for_model(record: BaseModelRecord, device_preference: str) -> torch.device:
    """The device to train on; a full-size model (by its trained component's parameter count, from the record)
    with no GPU is refused unless the CPU was asked for."""
    device = resolve_device(device_preference)
    if device.type == "cpu" and device_preference == "auto":
        count = record.parameter_count
        if count is not None and count >= FULL_SIZE_PARAMETERS:
            raise ConfigError(
                f"no CUDA GPU found, and {record.repo_id} is a full-size model ({record.trained_component}: "
                f"{count / 1e6:,.0f}M parameters) that would take days on a CPU: run on a machine with a GPU, "
                "pass --device cpu to insist, or try `hubtools demo`"
            )
    return device


def diffusers_warnings_off() -> None:
    """diffusers' warnings about optional components are noise to a user; their own DIFFUSERS_VERBOSITY wins."""
    if "DIFFUSERS_VERBOSITY" not in os.environ:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()


def quiet_weight_loading() -> None:
    """Hide diffusers' and transformers' per-component loading and saving bars (noise for a user).

    huggingface_hub's download and upload bars stay: those are real transfers a person waits for.
    """
    if os.environ.get("HUBTOOLS_DEBUG", "") not in ("", "0"):
        return
    import diffusers

    diffusers_warnings_off()
    import transformers
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    hub_bars_were_on = not are_progress_bars_disabled()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()  # also turns the hub's bars off ...
    if hub_bars_were_on:
        enable_progress_bars()  # ... so give those back


def with_family_defaults(cfg, token: str | None = None, record: BaseModelRecord | None = None):
    """(family, ``cfg`` with the family's defaults where the user left settings unset), from ``record`` (resolved
    here when not given: two small JSON files, no weights)."""
    record = record or resolve_base_model_record(cfg.model, token=token)
    family = family_of(record)
    return family, apply_family_defaults(cfg, family, record.denoiser_config)


def load_base_model(model_cfg: ModelConfig, *, record: BaseModelRecord | None = None, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32, token: str | None = None) -> BaseModel:
    """The base pipeline of its family's class, pinned to the commit ``record`` resolved (resolved here when not
    given); ``model.vae`` swaps in another VAE."""
    diffusers_warnings_off()
    record = record or resolve_base_model_record(model_cfg, token=token)
    family = family_of(record)
    replaced = {"vae": load_vae(model_cfg.vae, dtype=dtype, token=token)} if model_cfg.vae else {}
    # tokenizers the identifier check already read from this base model are not read again
    replaced = {**take_loaded_tokenizers(record.repo_id, record.load_revision), **replaced}
    try:
        pipe = family.pipeline_class().from_pretrained(
            record.repo_id, revision=record.load_revision, token=token, **dtype_kwargs("diffusers", dtype),
            **family.extra_pipeline_kwargs, **replaced,
        )
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(
            f"base model {record.repo_id} could not be loaded as a {family.title} diffusers pipeline "
            f"(it needs {', '.join(family.components())}): {first_line(error)}"
        ) from None
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return BaseModel(model_id=record.repo_id, revision=record.commit, pipeline=pipe, family=family, record=record)


def vae_source(reference: str) -> tuple[str, str]:
    """(folder or Hub id, revision or "") of ``--vae``; neither a folder nor an id is a one-line error."""
    local = Path(reference).expanduser()
    model_id, _, revision = (str(local), "", "") if local.is_dir() else reference.partition("@")
    check_model_reference(model_id, what="--vae", example="madebyollin/sdxl-vae-fp16-fix")
    return model_id, revision


def load_vae(reference: str, *, dtype: torch.dtype = torch.float32, token: str | None = None):
    """An ``AutoencoderKL`` from a Hub id (``ns/name[@revision]``) or local folder: a VAE repo (config at the
    top, as ``madebyollin/sdxl-vae-fp16-fix``) or a pipeline's ``vae/`` subfolder."""
    from diffusers import AutoencoderKL

    model_id, revision = vae_source(reference)
    error: Exception | None = None
    for subfolder in (None, "vae"):
        try:
            return AutoencoderKL.from_pretrained(model_id, subfolder=subfolder, revision=revision or None, token=token,
                                                 **dtype_kwargs("diffusers", dtype))
        except (OSError, ValueError) as failure:
            error = failure
    raise ConfigError(f"--vae {reference} could not be loaded as a diffusers AutoencoderKL (a VAE repo or a "
                      f"pipeline with vae/): {first_line(error)}")


def load_base_pipeline(model_cfg: ModelConfig, device: torch.device | str | None = None,
                       token: str | None = None, record: BaseModelRecord | None = None):
    """The untrained base pipeline, as evaluation baselines and LoRA runs need it."""
    return load_base_model(model_cfg, record=record, device=torch.device(device) if isinstance(device, str) else device,
                           token=token).pipeline


def load_run_pipeline(run_dir: Path, device: torch.device | str | None = None, token: str | None = None):
    """The trained pipeline of a run folder: a full pipeline folder, or the base model plus LoRA weights."""
    from diffusers import DiffusionPipeline

    diffusers_warnings_off()
    run = RunFolder(Path(run_dir))
    run_dir = run.root
    run.require_trained_model()  # a run set up but never trained
    if run.model_index.is_file():
        family = family_of(record_of_run(run_dir, token=token))
        pipe = DiffusionPipeline.from_pretrained(run_dir, **family.extra_pipeline_kwargs)
    elif run.is_lora:
        config = load_run_config(run_dir)
        pipe = load_base_pipeline(config.model, token=token, record=record_of_run(run_dir, config.model, token=token))
        pipe.load_lora_weights(run_dir, weight_name=LORA_WEIGHTS_FILENAME)
    else:
        raise ConfigError(f"{run_dir} is not a hubtools run folder (no {RUN_CONFIG_FILENAME})")
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
