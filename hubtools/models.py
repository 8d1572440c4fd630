"""Base-model loading, trained-run loading, and the tiny offline Stable Diffusion used by tests and the demo.

The tiny model has the real SD 1.x structure (UNet with cross-attention, 8x-downsampling VAE, CLIP text
encoder with the real 49,408-token vocabulary) at a few million random parameters and 64 px, so every code
path a real run takes is exercised in seconds on a CPU. It is published on the (local) Hub as
``hubtools/tiny-stable-diffusion`` and loaded from there with ``from_pretrained``, like any base model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hubtools.config import RUN_CONFIG_FILENAME, TINY_BASE_MODEL, ModelConfig, load_run_config
from hubtools.errors import ConfigError, HubError
from hubtools.hubenv import current_endpoint

TINY_RESOLUTION = 64
LORA_WEIGHTS_FILENAME = "pytorch_lora_weights.safetensors"
_TINY_SEED = 1234


# -- devices ------------------------------------------------------------------------------------------


def resolve_device(preference: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one; asking for ``cuda`` without one is a user error."""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible: use --device cpu (slow for a real model) "
            "or try `hubtools demo`, which needs no GPU"
        )
    return torch.device("cpu")


# -- the tiny model ----------------------------------------------------------------------------------


def build_tiny_pipeline():
    """A random-weight, deterministic, SD-1.x-shaped ``StableDiffusionPipeline`` (64 px, ~3.5M parameters)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from hubtools.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(_TINY_SEED)
        unet = UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        # Four blocks: the VAE downsamples by 8 as SD's does (64 px -> 8x8 latents).
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=TINY_RESOLUTION,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                projection_dim=32,
            )
        )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


TINY_MODEL_CARD = """---
license: apache-2.0
library_name: diffusers
pipeline_tag: text-to-image
tags:
- stable-diffusion
- hubtools
- tiny-random
---

# tiny-stable-diffusion

A Stable-Diffusion-1.x-shaped pipeline with **random weights** (UNet, 8x VAE and CLIP text encoder of a few
million parameters, 64 px) and the real CLIP tokenizer. It draws noise: it exists so that hubtools' demo and
tests run every code path of a real DreamBooth run in seconds on a CPU, with no download.
"""


def publish_tiny_model(endpoint: str, token: str, repo_id: str = TINY_BASE_MODEL) -> str:
    """Publish the tiny pipeline to the Hub at ``endpoint`` (idempotent) and return its repo id."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hubtools-tiny-") as tmp:
        build_tiny_pipeline().save_pretrained(tmp, safe_serialization=True)
        Path(tmp, "README.md").write_text(TINY_MODEL_CARD, encoding="utf-8")
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message="Add the tiny random-weight pipeline")
    return repo_id


# -- base models ---------------------------------------------------------------------------------------


@dataclass
class BaseModel:
    """The parts of a base pipeline a DreamBooth run needs, and where they came from."""

    model_id: str
    revision: str | None  # the commit sha actually loaded (None for a local folder)
    pipeline: Any  # diffusers.StableDiffusionPipeline

    @property
    def unet(self):
        return self.pipeline.unet

    @property
    def vae(self):
        return self.pipeline.vae

    @property
    def text_encoder(self):
        return self.pipeline.text_encoder

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer


def _resolve_moved_id(model_id: str) -> str:
    try:
        from hubtools.basemodels import resolve_base_model
    except ImportError:
        return model_id
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
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi(token=token).model_info(model_id, revision=model_cfg.revision)
    except GatedRepoError:
        raise HubError(f"base model {model_id} is gated: accept its licence on the Hub and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"base model {model_id} not found on {current_endpoint()}: check the id (e.g. "
            f"stable-diffusion-v1-5/stable-diffusion-v1-5), or log in if it is private"
        ) from None
    except RevisionNotFoundError:
        raise ConfigError(f"base model {model_id} has no revision {model_cfg.revision!r}: check --revision") from None
    except OSError as error:  # connection refused, DNS, timeouts: HfHubHTTPError is an OSError too
        raise HubError(f"could not reach the Hub at {current_endpoint()} for base model {model_id}: {error}") from None
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


def quiet_weight_loading() -> None:
    """Hide diffusers' and transformers' per-component loading and saving bars (noise for a user).

    huggingface_hub's download and upload bars stay: those are real transfers a person waits for.
    """
    if os.environ.get("HUBTOOLS_DEBUG", "") not in ("", "0"):
        return
    import diffusers
    import transformers
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    hub_bars_were_on = not are_progress_bars_disabled()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()  # also turns the hub's bars off ...
    if hub_bars_were_on:
        enable_progress_bars()  # ... so give those back


def dtype_kwargs(library: str, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype argument under the name this install's ``library`` wants.

    diffusers 0.40 and transformers 4.56 renamed ``torch_dtype`` to ``dtype`` and warn on the old name;
    older releases ignore the new one, so the name follows the installed version.
    """
    from importlib.metadata import version

    from packaging.version import Version

    renamed_in = {"diffusers": "0.40", "transformers": "4.56"}[library]
    name = "dtype" if Version(version(library)) >= Version(renamed_in) else "torch_dtype"
    return {name: dtype}


def load_base_model(model_cfg: ModelConfig, *, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32, token: str | None = None) -> BaseModel:
    """Load the base pipeline (pinned to the commit it resolves to now) without the safety checker."""
    from diffusers import StableDiffusionPipeline

    model_id, sha = resolve_base_revision(model_cfg, token=token)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            model_id, revision=sha or model_cfg.revision, token=token, **dtype_kwargs("diffusers", dtype),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(
            f"base model {model_id} could not be loaded as a Stable Diffusion 1.x diffusers pipeline "
            f"(it needs unet, vae, text_encoder, tokenizer and scheduler): {_first_line(error)}"
        ) from None
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return BaseModel(model_id=model_id, revision=sha, pipeline=pipe)


def load_base_pipeline(model_cfg: ModelConfig, device: torch.device | str | None = None,
                       token: str | None = None):
    """The untrained base pipeline, as evaluation baselines and LoRA runs need it."""
    return load_base_model(model_cfg, device=torch.device(device) if isinstance(device, str) else device,
                           token=token).pipeline


def is_lora_run(run_dir: Path) -> bool:
    return (Path(run_dir) / LORA_WEIGHTS_FILENAME).is_file()


def load_run_pipeline(run_dir: Path, device: torch.device | str | None = None, token: str | None = None):
    """The trained pipeline of a run folder: a full pipeline folder, or the base model plus LoRA weights."""
    from diffusers import DiffusionPipeline

    run_dir = Path(run_dir)
    if (run_dir / "model_index.json").is_file():
        pipe = DiffusionPipeline.from_pretrained(run_dir, safety_checker=None, requires_safety_checker=False)
    elif is_lora_run(run_dir):
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


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
