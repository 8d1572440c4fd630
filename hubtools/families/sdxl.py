"""Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIP text encoders whose penultimate hidden
states are concatenated, the second one's pooled projection, and ``add_time_ids`` (original size, crop
corner, target size) as extra UNet conditioning. Training is DDPM, as for SD 1.x."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

from hubtools.families.base import Conditioning, License, MemoryProfile
from hubtools.families.sd import StableDiffusion

_TINY_SEED = 1234
_TINY_RESOLUTION = 64


class StableDiffusionXL(StableDiffusion):
    name = "sdxl"
    title = "Stable Diffusion XL"
    pipeline_class_name = "StableDiffusionXLPipeline"
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")
    trainable_text_encoders = ("text_encoder", "text_encoder_2")
    tiny_repo_id = "hubtools/tiny-stable-diffusion-xl"
    default_resolution = 1024
    # counted with torch's FlopCounterMode on the real shapes (benchmarks/sdxl_configs.json at 1024 px: 6.76 TFLOP, on the meta device)
    forward_flops_per_parameter_and_pixel = 0.161
    card_dtype = "torch.float16"
    # No invisible watermark: it needs an extra package and changes the pixels a test compares.
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {"add_watermarker": False}
    card_tag = "stable-diffusion-xl"  # the Hub tag of the family, on every card
    tiny_card_tags = ("stable-diffusion-xl",)
    # 2.6B-parameter UNet at 1024 px: a full fine-tune holds ~42 GB of fp32 weights, gradients and AdamW states
    # before activations; its LoRA target is <= 12 GB (estimates until measured: benchmarks/).
    memory_profiles = (
        MemoryProfile("high", 80, "full", False, False, "full fine-tune, AdamW, no checkpointing (fastest)"),
        MemoryProfile("medium", 40, "full", True, True, "full fine-tune, 8-bit Adam, gradient checkpointing"),
        MemoryProfile("low", 12, "lora", True, True, "LoRA, 8-bit Adam, gradient checkpointing"),
    )

    def sampling_defaults(self, denoiser_config: dict[str, Any]):
        from hubtools.families.base import SamplingDefaults

        return SamplingDefaults(guidance_scale=5.0, num_inference_steps=30, guidance_scales=(5.0, 7.5))

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return License("openrail++")

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """As ``StableDiffusionXLPipeline.encode_prompt``: penultimate hidden states of both encoders side by
        side, and the second encoder's pooled (projected) output."""
        import torch
        hidden, pooled = [], None
        for name in self.text_encoders:
            output = text_encoders[name](token_ids[name], output_hidden_states=True)
            if output[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds
                pooled = output[0]
            hidden.append(output.hidden_states[-2])
        return Conditioning({"prompt_embeds": torch.cat(hidden, dim=-1), "pooled_prompt_embeds": pooled})

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        prompt_embeds = conditioning["prompt_embeds"]
        return denoiser(model_input, timesteps, prompt_embeds, added_cond_kwargs={
            "text_embeds": conditioning["pooled_prompt_embeds"],
            "time_ids": (conditioning.tensors["time_ids"].to(model_input.device, prompt_embeds.dtype)
                         if "time_ids" in conditioning.tensors else self.time_ids(model_input, prompt_embeds.dtype)),
        }).sample

    def with_image_conditioning(self, conditioning: Conditioning, geometry: list, size: tuple[int, int]) -> Conditioning:
        """Each photo's true original size and crop corner in ``add_time_ids`` (SDXL's micro-conditioning:
        the model learns not to draw cut-off subjects); the batch's bucket is the target size. Examples with no
        photo geometry (class images) say they are uncropped at the bucket size."""
        import torch
        if not any(geometry):
            return conditioning
        width, height = size
        rows = [[height, width, 0, 0, height, width] if item is None else
                [item.original_size[1], item.original_size[0], *item.crop_top_left, height, width]
                for item in geometry]
        return Conditioning({**conditioning.tensors, "time_ids": torch.tensor(rows, dtype=torch.float32)})

    def time_ids(self, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``add_time_ids``: original size, crop top-left, target size. Training images are centre-cropped to
        the training resolution, so original and target are that square and the crop corner is (0, 0)."""
        import torch
        height, width = latents.shape[-2] * self.vae_scale_factor, latents.shape[-1] * self.vae_scale_factor
        row = torch.tensor([height, width, 0, 0, height, width], dtype=dtype, device=latents.device)
        return row.repeat(latents.shape[0], 1)

    # -- the tiny random model -----------------------------------------------------------------------------

    def build_tiny_pipeline(self):
        """Two CLIP encoders (the second with a projection), a ``text_time`` UNet, an 8x VAE: 64 px."""
        import torch
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        from hubtools.tokenizer import build_clip_tokenizer

        tokenizer = build_clip_tokenizer()
        tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer.name_or_path, pad_token="!")  # as SDXL's second one
        hidden, projection, time_embed = 32, 32, 8

        def clip_config():
            return CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=projection,
            )

        with torch.random.fork_rng():
            torch.manual_seed(_TINY_SEED)
            unet = UNet2DConditionModel(
                sample_size=_TINY_RESOLUTION // 8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                use_linear_projection=True, transformer_layers_per_block=(1, 1),
                cross_attention_dim=2 * hidden,  # both encoders' hidden states side by side
                addition_embed_type="text_time", addition_time_embed_dim=time_embed,
                projection_class_embeddings_input_dim=6 * time_embed + projection, norm_num_groups=8,
            )
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                latent_channels=4, norm_num_groups=8, sample_size=_TINY_RESOLUTION, scaling_factor=0.13025,
                force_upcast=True,
            )
            text_encoder = CLIPTextModel(clip_config())
            text_encoder_2 = CLIPTextModelWithProjection(clip_config())
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
        )
        return StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
        )
