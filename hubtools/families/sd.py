"""Stable Diffusion 1.x / 2.x (``StableDiffusionPipeline``): one CLIP text encoder, a UNet, DDPM training
with an epsilon or v-prediction target, offset noise and min-SNR weighting."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from hubtools.families.base import Conditioning, Family, License, NoisyBatch, SamplingDefaults


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
    card_dtype = "torch.float16"
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {
        "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
    }
    tiny_card_tags = ("stable-diffusion",)

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
        from hubtools.training.loss import add_noise, snr_weights, training_target

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
        from hubtools.models import build_tiny_pipeline

        return build_tiny_pipeline()

    def tiny_card(self) -> str:
        from hubtools.models import TINY_MODEL_CARD

        return TINY_MODEL_CARD
