"""The tiny offline Stable Diffusion used by tests and the demo, and its publishing to a (local) Hub.

The tiny model has the real SD 1.x structure (UNet with cross-attention, 8x-downsampling VAE, CLIP text
encoder with the real 49,408-token vocabulary) at a few million random parameters and 64 px, so every code
path a real run takes is exercised in seconds on a CPU. It is published on the (local) Hub as
``hubtools/tiny-stable-diffusion`` and loaded from there with ``from_pretrained``, like any base model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hubtools.config import TINY_BASE_MODEL

TINY_RESOLUTION = 64
_TINY_SEED = 1234


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
