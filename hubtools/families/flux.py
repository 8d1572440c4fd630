"""FLUX.1 (``FluxPipeline``, dev and schnell): CLIP's pooled output plus T5's token sequence, a
transformer over 2x2-packed latent patches with text and image position ids, flow-matching training
(logit-normal timestep sampling with the scheduler's resolution-dependent shift, velocity target
``noise - latents``) and, for dev, the guidance embedding.

dev and schnell share the class; schnell is the one without a guidance embedding (``guidance_embeds``
false in the transformer's config), distilled for about four steps at guidance 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

from hubtools.families.flow_matching import FlowMatchingFamily, tiny_flow_matching_vae
from hubtools.families.base import (
    Conditioning, License, NoisyBatch, SamplingDefaults, lora_profiles, unwrapped,
)

_TINY_SEED = 1234

# Guidance the transformer is conditioned on while training a dev LoRA (diffusers' and SimpleTuner's recipe
# train at 1; the embedding's value at sampling time, ~3.5, is then what a user turns).
TRAINING_GUIDANCE = 1.0
# The timestep density of SD3/FLUX training: sigmoid of a standard normal (more weight mid-schedule).
TIMESTEP_SAMPLING = "logit_normal"


DEV_LICENSE = License(
    "other", name="flux-1-dev-non-commercial-license",
    link="https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    note="FLUX.1 [dev] Non-Commercial License: outputs may be used commercially, the weights may not",
)


class Flux(FlowMatchingFamily):
    name = "flux"
    title = "FLUX.1"
    pipeline_class_name = "FluxPipeline"
    denoiser = "transformer"
    text_encoders = ("text_encoder", "text_encoder_2")  # CLIP (pooled), T5 (sequence)
    tokenizers = ("tokenizer", "tokenizer_2")
    trainable_text_encoders = ("text_encoder",)  # the CLIP one, as diffusers' recipe; T5 is too large to tune
    denoiser_lora_targets = (
        "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
        "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    )
    tiny_repo_id = "hubtools/tiny-flux"
    default_resolution = 1024
    card_dtype = "torch.bfloat16"
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {}
    card_tag = "flux"  # the Hub tag of the family, on every card
    tiny_card_tags = ("flux",)
    # 12B transformer: never fully fine-tuned by a profile; its profiles are LoRA ones (the QLoRA recipe, with a
    # 4-bit base, peaks near 9 GB). Estimates until measured: benchmarks/.
    memory_profiles = lora_profiles(48, 32, 24, ", cached text embeddings (lower --resolution below this)")
    # Beside the diffusers file, the same LoRA in sd-scripts' own FLUX layout (BFL module names, q, k and v fused):
    # what Forge and AUTOMATIC1111-style loaders read (``lora_files.sd_scripts_flux_state``).
    kohya_lora = True
    kohya_lora_layout = "sd-scripts' (kohya's) FLUX.1 layout: BFL module names, q, k and v fused"
    kohya_lora_readers = "Forge, ComfyUI, AUTOMATIC1111-style loaders and kohya's sd-scripts"
    swaps_scheduler = False
    pipeline_sizes_itself = False  # FluxPipeline draws 1024 px unless told
    patch_size = 2  # 2x2 latent patches per token: image sides are multiples of 16 px

    @staticmethod
    def is_schnell(denoiser_config: dict[str, Any]) -> bool:
        return not denoiser_config.get("guidance_embeds", True)

    def variant(self, denoiser_config: dict[str, Any]) -> str:
        return "schnell" if self.is_schnell(denoiser_config) else "dev"

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        if self.is_schnell(denoiser_config):
            return SamplingDefaults(guidance_scale=0.0, num_inference_steps=4, guidance_scales=(0.0,),
                                    extra={"max_sequence_length": 256})
        return SamplingDefaults(guidance_scale=3.5, num_inference_steps=28, guidance_scales=(2.5, 3.5, 4.5),
                                extra={"max_sequence_length": 512})

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return License("apache-2.0") if self.is_schnell(denoiser_config) else DEV_LICENSE

    # -- training ------------------------------------------------------------------------------------------

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        clip, t5 = parts["tokenizer"], parts["tokenizer_2"]
        max_t5 = min(self.sampling_defaults(dict(parts["transformer"].config)).extra["max_sequence_length"],
                     t5.model_max_length)
        return {
            "text_encoder": clip(captions, padding="max_length", truncation=True, max_length=clip.model_max_length,
                                 return_tensors="pt").input_ids.to(device),
            "text_encoder_2": t5(captions, padding="max_length", truncation=True, max_length=max_t5,
                                 return_tensors="pt").input_ids.to(device),
        }

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """As ``FluxPipeline.encode_prompt``: CLIP's pooled output, T5's last hidden states."""
        pooled = text_encoders["text_encoder"](token_ids["text_encoder"], output_hidden_states=False).pooler_output
        sequence = text_encoders["text_encoder_2"](token_ids["text_encoder_2"], output_hidden_states=False)[0]
        return Conditioning({"prompt_embeds": sequence, "pooled_prompt_embeds": pooled})

    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        """Rectified flow: x_t = (1 - t) x_0 + t noise, target noise - x_0, t from the logit-normal density,
        shifted towards noise as the scheduler shifts it for this many image tokens."""
        import torch
        from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

        count = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        u = compute_density_for_timestep_sampling(TIMESTEP_SAMPLING, count, logit_mean=0.0, logit_std=1.0,
                                                  generator=generator)
        sigmas = self.shift_sigmas(u, scheduler.config, image_tokens=latents.shape[-2] * latents.shape[-1] // 4)
        sigmas = sigmas.to(device)
        expanded = sigmas.view(-1, 1, 1, 1).to(latents.dtype)
        noisy = (1.0 - expanded) * latents + expanded * noise
        weights = compute_loss_weighting_for_sd3(TIMESTEP_SAMPLING, sigmas).float()
        return NoisyBatch(noisy, sigmas * scheduler.config.num_train_timesteps, noise - latents, weights)

    @staticmethod
    def shift_sigmas(u: torch.Tensor, scheduler_config, *, image_tokens: int) -> torch.Tensor:
        """The scheduler's timestep shift: dynamic (FLUX.1-dev: mu grows with the image's token count, as
        ``FluxPipeline`` samples) or the fixed ``shift`` (schnell: 1, no shift)."""
        if scheduler_config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            mu = calculate_shift(image_tokens, scheduler_config.get("base_image_seq_len", 256),
                                 scheduler_config.get("max_image_seq_len", 4096),
                                 scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15))
            return math.exp(mu) / (math.exp(mu) + (1 / u - 1))
        shift = float(scheduler_config.get("shift", 1.0))
        return shift * u / (1 + (shift - 1) * u)

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        import torch
        from diffusers import FluxPipeline

        batch, channels, height, width = model_input.shape
        prompt_embeds = conditioning["prompt_embeds"]
        packed = FluxPipeline._pack_latents(model_input, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, model_input.device,
                                                           prompt_embeds.dtype)
        text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=model_input.device, dtype=prompt_embeds.dtype)
        guidance = None
        if unwrapped(denoiser).config.guidance_embeds:
            guidance = torch.full((batch,), TRAINING_GUIDANCE, device=model_input.device, dtype=torch.float32)
        prediction = denoiser(
            hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
            pooled_projections=conditioning["pooled_prompt_embeds"], encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids, img_ids=image_ids, return_dict=False,
        )[0]
        return FluxPipeline._unpack_latents(prediction, height * self.vae_scale_factor, width * self.vae_scale_factor,
                                            self.vae_scale_factor)

    def use_fast_attention(self, denoiser) -> None:
        """FLUX's own attention processors already call PyTorch's SDPA."""

    def kohya_lora_state(self, diffusers_file) -> dict[str, torch.Tensor]:
        from hubtools.families.lora_files import sd_scripts_flux_state

        return sd_scripts_flux_state(diffusers_file)

    # -- the tiny random model -----------------------------------------------------------------------------

    def build_tiny_pipeline(self):
        """CLIP + a small T5 encoder, a one-double-block, one-single-block transformer over 16-channel latents
        (64 inputs after 2x2 packing), an 8x VAE with a shift factor, FLUX.1-dev's scheduler: 64 px."""
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
        from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

        from hubtools.tokenizer import build_clip_tokenizer, build_t5_tokenizer

        tokenizer, tokenizer_2 = build_clip_tokenizer(), build_t5_tokenizer()
        latent_channels, clip_hidden, t5_hidden = 16, 32, 32
        with torch.random.fork_rng():
            torch.manual_seed(_TINY_SEED)
            transformer = FluxTransformer2DModel(
                patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=t5_hidden,
                pooled_projection_dim=clip_hidden, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
            )
            vae = tiny_flow_matching_vae(shift_factor=0.1159, scaling_factor=0.3611)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=clip_hidden, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=clip_hidden,
            ))
            text_encoder_2 = T5EncoderModel(T5Config(
                vocab_size=len(tokenizer_2), d_model=t5_hidden, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=tokenizer_2.pad_token_id,
                feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
            ))
        scheduler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )
        return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                            text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
