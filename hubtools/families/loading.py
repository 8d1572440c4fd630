"""Loading a base model by its family: ``model_index.json`` is read first (the only file fetched before the
family is known), then the pipeline class of that family loads the parts, pinned to the resolved commit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hubtools.config import ModelConfig
from hubtools.errors import ConfigError, HubError
from hubtools.families import Family, detect
from hubtools.hubenv import current_endpoint


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
    from hubtools.families import apply_family_defaults

    family, model_id, sha = detect_family(cfg.model, token=token)
    denoiser_config = read_denoiser_config(family, model_id, sha or cfg.model.revision, token=token)
    return family, apply_family_defaults(cfg, family, denoiser_config)


def detect_family(model_cfg: ModelConfig, token: str | None = None) -> tuple[Family, str, str | None]:
    """(family, model id after known moves, commit sha) of a base model, from its ``model_index.json``."""
    from hubtools.models import resolve_base_revision

    model_id, sha = resolve_base_revision(model_cfg, token=token)
    index = read_model_index(model_id, sha or model_cfg.revision, token=token)
    return detect(index, source=f"base model {model_id}"), model_id, sha


def load_base(model_cfg: ModelConfig, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32,
              token: str | None = None):
    """(family, ``BaseModel``): the base pipeline of its family's class, pinned to the commit it resolves to."""
    from hubtools.models import BaseModel, _first_line, dtype_kwargs

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
            f"(it needs {', '.join(family.components())}): {_first_line(error)}"
        ) from None
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return family, BaseModel(model_id=model_id, revision=sha, pipeline=pipe)


def load_vae(reference: str, *, dtype: torch.dtype = torch.float32, token: str | None = None):
    """An ``AutoencoderKL`` from a Hub id (``ns/name[@revision]``) or local folder: a VAE repo (config at the
    top, as ``madebyollin/sdxl-vae-fp16-fix``) or a pipeline's ``vae/`` subfolder."""
    from diffusers import AutoencoderKL

    from hubtools.models import _first_line, dtype_kwargs

    local = Path(reference).expanduser()
    model_id, _, revision = (str(local), "", "") if local.is_dir() else reference.partition("@")
    attempts = [None, "vae"]
    error: Exception | None = None
    for subfolder in attempts:
        try:
            return AutoencoderKL.from_pretrained(model_id, subfolder=subfolder, revision=revision or None, token=token,
                                                 **dtype_kwargs("diffusers", dtype))
        except (OSError, ValueError) as failure:
            error = failure
    raise ConfigError(f"--vae {reference} could not be loaded as a diffusers AutoencoderKL (a VAE repo or a "
                      f"pipeline with vae/): {_first_line(error)}")
