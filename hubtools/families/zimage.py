"""Z-Image (``ZImagePipeline``, Tongyi-MAI's Z-Image and Z-Image-Turbo): a Qwen3 LLM as the text encoder (the
second-to-last hidden states of the prompt in Qwen's chat markup, padding dropped), a single-stream transformer
over 2x2 latent patches, flow-matching training as diffusers' ``train_dreambooth_lora_z_image.py``: uniform
timesteps picked from the scheduler's own (shifted) schedule, ``x_t = (1 - sigma) x_0 + sigma noise``, the
model called with ``(1000 - t) / 1000`` and its output negated, target ``noise - x_0``, no loss weighting.
The text encoder is not trained (the script's recipe); LoRA targets the attention projections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from hubtools.families.flow_matching import FlowMatchingFamily, real_shapes_in_bf16, tiny_flow_matching_vae
from hubtools.families.base import (
    Conditioning, License, MemoryProfile, NoisyBatch, SamplingDefaults, lora_profiles,
)

_TINY_SEED = 1234
# The script's default --weighting_scheme: uniform timesteps, no loss weighting.
TIMESTEP_SAMPLING = "none"
MAX_SEQUENCE_LENGTH = 512


# From the real shapes' parameter counts (benchmarks/zimage_configs.json, counted on the meta device by
# tests/test_family_zimage.py): a 6.15B transformer, Qwen3-4B (4.02B) and FLUX.1's VAE (0.08B) are ~19.1 GiB of
# frozen bf16 weights, all kept on the GPU, before the LoRA, its optimizer and the activations of ~4,600 tokens
# (1024 px plus the caption) through 34 blocks 3840 wide; a full fine-tune (16 bytes a parameter) would need
# ~92 GiB, so every profile is a LoRA one. Estimates until bench_train.py measures them on a GPU.
MEMORY_PROFILES: tuple[MemoryProfile, ...] = lora_profiles(48, 28, 24)

# Z-Image and Z-Image-Turbo are Apache 2.0: the "License: apache-2.0" of both model cards on the Hub
# (Tongyi-MAI/Z-Image, Tongyi-MAI/Z-Image-Turbo; their card metadata's ``license``).
LICENSE = License("apache-2.0", note="Apache 2.0: commercial use allowed")


class ZImage(FlowMatchingFamily):
    name = "z-image"
    title = "Z-Image"
    pipeline_class_name = "ZImagePipeline"
    denoiser = "transformer"
    text_encoders = ("text_encoder",)  # Qwen3
    tokenizers = ("tokenizer",)
    first_tokenizer_is_clip = False  # the identifier is counted in its Qwen tokenizer too
    trainable_text_encoders = ()  # as the diffusers recipe: the 4B LLM stays frozen
    denoiser_lora_targets = ("to_k", "to_q", "to_v", "to_out.0")
    tiny_repo_id = "hubtools/tiny-z-image"
    default_resolution = 1024
    card_dtype = "torch.bfloat16"
    card_tag = "z-image"
    tiny_card_tags = ("z-image",)
    # Beside the diffusers file, the ComfyUI copy: ComfyUI's Z-Image (Lumina2) LoRA loader maps diffusers' module
    # names (``transformer.`` or ``diffusion_model.`` + ``layers.N.attention.to_q`` ...) onto its fused qkv, but
    # scales by a per-module ``alpha`` (1 without one), which diffusers keeps in the metadata only. The copy is
    # keyed ``diffusion_model.<module>``, the checkpoint's own prefix, which diffusers' Z-Image loader reads too.
    kohya_lora = True
    kohya_lora_layout = "ComfyUI's layout: the checkpoint's module names (`diffusion_model.*`) with a per-module alpha"
    kohya_lora_readers = "ComfyUI"
    swaps_scheduler = False  # samples with the flow-matching scheduler it was trained for
    pipeline_sizes_itself = False  # ZImagePipeline draws 1024 px unless told
    patch_size = 2
    memory_profiles = MEMORY_PROFILES
    benchmark_configs = "zimage_configs.json"  # benchmarks/bench_train.py builds the real shapes from it
    benchmark_variants = ("",)

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        # ZImagePipeline's own defaults (the base model); Z-Image-Turbo draws at ~9 steps and guidance 0
        return SamplingDefaults(guidance_scale=5.0, num_inference_steps=50, guidance_scales=(4.0, 5.0),
                                extra={"max_sequence_length": MAX_SEQUENCE_LENGTH})

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return LICENSE

    # -- training ------------------------------------------------------------------------------------------

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """As ``ZImagePipeline._encode_prompt``: each caption as one user turn of Qwen's chat markup."""
        tokenizer = parts["tokenizer"]
        marked = [tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                                add_generation_prompt=True, enable_thinking=True)
                  for caption in captions]
        tokens = tokenizer(marked, padding="max_length", max_length=min(MAX_SEQUENCE_LENGTH, tokenizer.model_max_length),
                           truncation=True, return_tensors="pt")
        return {"text_encoder": tokens.input_ids.to(device), "text_encoder_mask": tokens.attention_mask.to(device)}

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """The second-to-last hidden states, padded; the mask says which rows are the prompt's."""
        mask = token_ids["text_encoder_mask"].bool()
        hidden = text_encoders["text_encoder"](input_ids=token_ids["text_encoder"], attention_mask=mask,
                                               output_hidden_states=True).hidden_states[-2]
        return Conditioning({"prompt_embeds": hidden, "prompt_mask": mask})

    def latent_distribution(self, vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The script encodes with the distribution's mode (its mean), not a sample: std 0."""
        import torch

        mean = vae.encode(pixels).latent_dist.mode()
        return mean, torch.zeros_like(mean)

    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        """The script's step: noise, then u ~ U(0, 1) picking one of the scheduler's training timesteps and its
        sigma; ``x_t = (1 - sigma) x_0 + sigma noise``; the model sees ``(T - t) / T``; target ``noise - x_0``."""
        import torch
        from diffusers.training_utils import compute_density_for_timestep_sampling

        count = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        u = compute_density_for_timestep_sampling(TIMESTEP_SAMPLING, count, logit_mean=0.0, logit_std=1.0,
                                                  generator=generator)
        total = scheduler.config.num_train_timesteps
        indices = (u * total).long()
        timesteps = scheduler.timesteps[indices].to(device)
        sigmas = scheduler.sigmas[indices].to(device=device, dtype=latents.dtype).view(-1, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        return NoisyBatch(noisy, (total - timesteps) / total, noise - latents, None)

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        """The transformer takes lists (one (C, 1, H, W) latent and one unpadded prompt per example) and predicts
        ``x_0 - noise``: negated to the target's sign, as the script does."""
        import torch

        embeds, mask = conditioning["prompt_embeds"], conditioning["prompt_mask"].bool()
        prompts = [embeds[i][mask[i]] for i in range(embeds.shape[0])]
        latents = list(model_input.unsqueeze(2).unbind(dim=0))
        predicted = denoiser(latents, timesteps.to(model_input.dtype), prompts, return_dict=False)[0]
        return -torch.stack(predicted, dim=0).squeeze(2)

    def use_fast_attention(self, denoiser) -> None:
        """Z-Image's attention processors already dispatch to PyTorch's SDPA."""

    def kohya_lora_state(self, diffusers_file) -> dict[str, torch.Tensor]:
        from hubtools.families.lora_files import with_module_alphas

        return with_module_alphas(diffusers_file, prefixes={"transformer": "diffusion_model"})

    def build_full_size_pipeline(self, configs: dict[str, Any], variant: str | None = None):
        """Z-Image of the real size with random weights, in bf16 (as it ships), for the benchmark."""
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

        models = real_shapes_in_bf16(real_shape_models, configs)
        return ZImagePipeline(**models, tokenizer=build_qwen_chat_tokenizer(),
                              scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"]))

    # -- the tiny random model -----------------------------------------------------------------------------

    def build_tiny_pipeline(self):
        """A byte-level Qwen tokenizer with Qwen's chat markup, a two-layer Qwen3 encoder, a two-layer Z-Image
        transformer over 16-channel latents (2x2 patches), an 8x VAE with a shift factor: 64 px."""
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
        from transformers import Qwen3Config, Qwen3Model

        tokenizer = build_qwen_chat_tokenizer()
        latent_channels, text_hidden = 16, 32
        with torch.random.fork_rng():
            torch.manual_seed(_TINY_SEED)
            transformer = ZImageTransformer2DModel(
                all_patch_size=(2,), all_f_patch_size=(1,), in_channels=latent_channels, dim=96, n_layers=2,
                n_refiner_layers=1, n_heads=6, n_kv_heads=6, norm_eps=1e-5, qk_norm=True, cap_feat_dim=text_hidden,
                rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
            )
            with torch.no_grad():  # created with torch.empty: fixed, or the model is not deterministic
                transformer.x_pad_token.fill_(1.0)
                transformer.cap_pad_token.fill_(1.0)
            vae = tiny_flow_matching_vae(shift_factor=0.1159, scaling_factor=0.3611)
            text_encoder = Qwen3Model(Qwen3Config(
                hidden_size=text_hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=MAX_SEQUENCE_LENGTH,
                pad_token_id=tokenizer.pad_token_id,
            ))
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
        return ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              transformer=transformer)


def real_shape_models(configs: dict[str, Any]) -> dict[str, Any]:
    """Random-weight models of Z-Image's real shapes (``configs``: benchmarks/zimage_configs.json) on the current
    default device and dtype: under ``torch.device("meta")`` they cost nothing and count parameters."""
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    return {
        "transformer": ZImageTransformer2DModel(**configs["transformer"]),
        "vae": AutoencoderKL(**configs["vae"]),
        "text_encoder": Qwen3Model(Qwen3Config(**configs["text_encoder"])),
    }


# Qwen's chat markup, as Qwen3's own template writes one user turn and the assistant's start (with
# ``enable_thinking`` false it adds the empty thinking block, as Qwen3's does).
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)


def build_qwen_chat_tokenizer():
    """A byte-level ``Qwen2Tokenizer`` for the tiny model (Qwen3's vocabulary is not shipped): every byte one
    token, Qwen's special tokens and chat template, built in memory."""
    from transformers import Qwen2Tokenizer

    from hubtools.tokenizer import _bytes_to_unicode

    vocab = {symbol: index for index, symbol in enumerate(_bytes_to_unicode().values())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", model_max_length=MAX_SEQUENCE_LENGTH)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<think>", "</think>"]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
