"""Stable Diffusion 1.x / 2.x (``StableDiffusionPipeline``): one CLIP text encoder, a UNet, DDPM training
with an epsilon or v-prediction target, offset noise and min-SNR weighting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

from hubtools.families.base import Conditioning, Family, License, MemoryProfile, NoisyBatch, SamplingDefaults


class StableDiffusion(Family):
    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    pipeline_class_name = "StableDiffusionPipeline"
    denoiser = "unet"
    text_encoders = ("text_encoder",)
    tokenizers = ("tokenizer",)
    trainable_text_encoders = ("text_encoder",)
    denoiser_lora_targets = ("to_k", "to_q", "to_v", "to_out.0")
    tiny_repo_id = "hubtools/tiny-stable-diffusion"
    default_resolution = 512
    # counted with torch's FlopCounterMode on the real shapes (benchmarks/sd15_configs.json at 512 px: 0.80 TFLOP, on the meta device)
    forward_flops_per_parameter_and_pixel = 0.228
    card_dtype = "torch.float16"
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {
        "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
    }
    card_tag = "stable-diffusion"  # the Hub tag of the family, on every card
    tiny_card_tags = ("stable-diffusion",)
    # The thresholds are the targets for SD 1.5 at 512 px (see benchmarks/README.md).
    memory_profiles = (
        MemoryProfile("high", 24, "full", False, False, "full fine-tune, AdamW, no checkpointing (fastest)"),
        MemoryProfile("medium", 16, "full", True, True, "full fine-tune, 8-bit Adam, gradient checkpointing"),
        MemoryProfile("low", 8, "lora", True, True, "LoRA, 8-bit Adam, gradient checkpointing"),
    )

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        return SamplingDefaults(guidance_scale=7.0, num_inference_steps=50, guidance_scales=(7.0, 11.0))

    def config_defaults(self, denoiser_config: dict[str, Any]) -> dict[str, Any]:
        return {}  # the config's defaults are SD 1.x's

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return License("creativeml-openrail-m")

    # -- training ------------------------------------------------------------------------------------------

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        ids = {}
        for encoder, tokenizer_name in zip(self.text_encoders, self.tokenizers):
            tokenizer = parts[tokenizer_name]
            ids[encoder] = tokenizer(captions, padding="max_length", truncation=True,
                                     max_length=tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
        return ids

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        return Conditioning({"encoder_hidden_states": text_encoders["text_encoder"](token_ids["text_encoder"])[0]})

    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        import torch
        from hubtools.families.ddpm import add_noise, snr_weights, training_target

        count = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        offset = torch.randn((count, latents.shape[1], 1, 1), generator=generator).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (count,), generator=generator).to(device)
        noisy, noise = add_noise(scheduler, latents, noise, timesteps, training.offset_noise, offset)
        target = training_target(scheduler, latents, noise, timesteps)
        weights = snr_weights(scheduler, timesteps, training.snr_gamma) if training.snr_gamma else None
        return NoisyBatch(noisy, timesteps, target, weights)

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        return denoiser(model_input, timesteps, conditioning["encoder_hidden_states"]).sample

    # -- the tiny random model -----------------------------------------------------------------------------

    def build_tiny_pipeline(self):
        return build_tiny_sd_pipeline()

    def tiny_card(self) -> str:
        return TINY_MODEL_CARD


TINY_RESOLUTION = 64
_TINY_SEED = 1234


def build_tiny_sd_pipeline():
    """A random-weight, deterministic, SD-1.x-shaped ``StableDiffusionPipeline`` (64 px, ~3.5M parameters)."""
    import torch
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
