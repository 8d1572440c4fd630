"""Loading pipelines: the base model a run starts from (pinned to a commit) and the trained model of a run.

The base model's family (``hubtools.families``) is read from its ``model_index.json`` first, the only file
fetched before it is known; the family's pipeline class then loads the parts."""

from __future__ import annotations

import logging
import os
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hubtools.basemodels import resolve_base_model
from hubtools.config import RUN_CONFIG_FILENAME, ModelConfig, load_run_config
from hubtools.devices import dtype_kwargs, resolve_device
from hubtools.errors import ConfigError, HubError, first_line
from hubtools.families import Family, apply_family_defaults, by_name, detect
from hubtools.hub_errors import hub_errors
from hubtools.hubenv import current_endpoint
from hubtools.runfolder import LORA_WEIGHTS_FILENAME, RunFolder


@dataclass
class BaseModel:
    """The parts of a base pipeline a DreamBooth run needs, and where they came from."""

    model_id: str
    revision: str | None  # the commit sha actually loaded (None for a local folder)
    pipeline: Any  # a diffusers pipeline of the family's class
    family: Family = field(default_factory=lambda: by_name("sd"))


def _resolve_moved_id(model_id: str) -> str:
    resolved, note = resolve_base_model(model_id)
    if note:
        logging.getLogger("hubtools").warning(note)
    return resolved


def resolve_base_revision(model_cfg: ModelConfig, token: str | None = None) -> tuple[str, str | None]:
    """(model id after known moves, commit sha) of a Hub base model; local folders have no sha."""
    model_id = model_cfg.base_model
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser()), None
    model_id = _resolve_moved_id(model_id)
    from huggingface_hub import HfApi

    with hub_errors(f"base model {model_id}", token=token, missing=ConfigError, revision=model_cfg.revision,
                    revision_hint="check --revision",
                    not_found_hint="check the id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5), or log in if it is private"):
        info = HfApi(token=token).model_info(model_id, revision=model_cfg.revision)
    return model_id, info.sha


# SD 1.x's UNet is (320, 640, 1280, 1280) wide; anything this wide is far too slow to train on a CPU.
_FULL_SIZE_UNET_WIDTH = 256


def unet_width(model_cfg: ModelConfig, token: str | None = None) -> int | None:
    """The widest UNet block of the base model, read from ``unet/config.json`` alone (no weights)."""
    import json

    local = Path(model_cfg.base_model).expanduser()
    try:
        if local.is_dir():
            path = local / "unet" / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            model_id = _resolve_moved_id(model_cfg.base_model)
            path = Path(hf_hub_download(model_id, "unet/config.json", revision=model_cfg.revision, token=token))
        return max(json.loads(path.read_text(encoding="utf-8"))["block_out_channels"])
    except (OSError, KeyError, ValueError):
        return None  # the loader reports what is missing, with a better message


def check_device_for_model(model_cfg: ModelConfig, device_preference: str, token: str | None = None) -> torch.device:
    """The device to train on; a full-size model with no GPU is refused unless the CPU was asked for."""
    device = resolve_device(device_preference)
    if device.type == "cpu" and device_preference == "auto":
        width = unet_width(model_cfg, token=token)
        if width is not None and width >= _FULL_SIZE_UNET_WIDTH:
            raise ConfigError(
                f"no CUDA GPU found, and {model_cfg.base_model} is a full-size model that would take days on a CPU: "
                "run on a machine with a GPU, pass --device cpu to insist, or try `hubtools demo`"
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


def read_model_index(model_id: str, revision: str | None, token: str | None = None) -> dict[str, Any]:
    """``model_index.json`` of a local pipeline folder or a Hub repo at ``revision``."""
    local = Path(model_id).expanduser()
    try:
        if local.is_dir():
            path = local / "model_index.json"
            if not path.is_file():
                raise ConfigError(f"base model folder {model_id} has no model_index.json: point --base-model at a "
                                  "diffusers pipeline folder (save_pretrained layout)")
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = Path(hf_hub_download(model_id, "model_index.json", revision=revision, token=token))
            except EntryNotFoundError:
                raise ConfigError(f"base model {model_id} has no model_index.json: it is not a diffusers pipeline "
                                  "(single-file checkpoints are not supported; use the diffusers version)") from None
        return json.loads(path.read_text(encoding="utf-8"))
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"model_index.json of {model_id} is not valid JSON ({error})") from None
    except OSError as error:
        raise HubError(f"could not read model_index.json of {model_id} from {current_endpoint()}: {error}") from None


def detect_family(model_cfg: ModelConfig, token: str | None = None) -> tuple[Family, str, str | None]:
    """(family, model id after known moves, commit sha) of a base model, from its ``model_index.json``."""
    model_id, sha = resolve_base_revision(model_cfg, token=token)
    index = read_model_index(model_id, sha or model_cfg.revision, token=token)
    return detect(index, source=f"base model {model_id}"), model_id, sha


def read_denoiser_config(family: Family, model_id: str, revision: str | None,
                         token: str | None = None) -> dict[str, Any]:
    """The denoiser's ``config.json`` (FLUX dev and schnell differ there), or {} when it cannot be read."""
    local = Path(model_id).expanduser()
    try:
        if local.is_dir():
            path = local / family.denoiser / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_id, f"{family.denoiser}/config.json", revision=revision, token=token))
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def with_family_defaults(cfg, token: str | None = None):
    """(family, ``cfg`` with the family's defaults where the user left settings unset); reads only
    ``model_index.json`` and the denoiser's ``config.json``."""
    family, model_id, sha = detect_family(cfg.model, token=token)
    denoiser_config = read_denoiser_config(family, model_id, sha or cfg.model.revision, token=token)
    return family, apply_family_defaults(cfg, family, denoiser_config)


def load_base_model(model_cfg: ModelConfig, *, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32, token: str | None = None) -> BaseModel:
    """The base pipeline of its family's class (read from model_index.json before anything else is fetched),
    pinned to the commit it resolves to now; ``model.vae`` swaps in another VAE."""
    diffusers_warnings_off()
    family, model_id, sha = detect_family(model_cfg, token=token)
    replaced = {"vae": load_vae(model_cfg.vae, dtype=dtype, token=token)} if model_cfg.vae else {}
    try:
        pipe = family.pipeline_class().from_pretrained(
            model_id, revision=sha or model_cfg.revision, token=token, **dtype_kwargs("diffusers", dtype),
            **family.extra_pipeline_kwargs, **replaced,
        )
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(
            f"base model {model_id} could not be loaded as a {family.title} diffusers pipeline "
            f"(it needs {', '.join(family.components())}): {first_line(error)}"
        ) from None
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return BaseModel(model_id=model_id, revision=sha, pipeline=pipe, family=family)


def load_vae(reference: str, *, dtype: torch.dtype = torch.float32, token: str | None = None):
    """An ``AutoencoderKL`` from a Hub id (``ns/name[@revision]``) or local folder: a VAE repo (config at the
    top, as ``madebyollin/sdxl-vae-fp16-fix``) or a pipeline's ``vae/`` subfolder."""
    from diffusers import AutoencoderKL

    local = Path(reference).expanduser()
    model_id, _, revision = (str(local), "", "") if local.is_dir() else reference.partition("@")
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
                       token: str | None = None):
    """The untrained base pipeline, as evaluation baselines and LoRA runs need it."""
    return load_base_model(model_cfg, device=torch.device(device) if isinstance(device, str) else device,
                           token=token).pipeline


def load_run_pipeline(run_dir: Path, device: torch.device | str | None = None, token: str | None = None):
    """The trained pipeline of a run folder: a full pipeline folder, or the base model plus LoRA weights."""
    from diffusers import DiffusionPipeline

    diffusers_warnings_off()
    run = RunFolder(Path(run_dir))
    run_dir = run.root
    if run.model_index.is_file():
        family = detect(json.loads(run.model_index.read_text(encoding="utf-8")), source=f"run {run_dir}")
        pipe = DiffusionPipeline.from_pretrained(run_dir, **family.extra_pipeline_kwargs)
    elif run.is_lora:
        config = load_run_config(run_dir)
        pipe = load_base_pipeline(config.model, token=token)
        pipe.load_lora_weights(run_dir, weight_name=LORA_WEIGHTS_FILENAME)
    elif (run_dir / RUN_CONFIG_FILENAME).is_file():
        raise ConfigError(f"run {run_dir} has no trained model yet: run `hubtools train --out {run_dir}` first")
    else:
        raise ConfigError(f"{run_dir} is not a hubtools run folder (no {RUN_CONFIG_FILENAME})")
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
