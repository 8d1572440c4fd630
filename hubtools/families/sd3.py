"""Stable Diffusion 3.5 (``StableDiffusion3Pipeline``: 3.5 Large, Large Turbo, Medium, and SD3 Medium):
three text encoders (CLIP-L and CLIP-G give the pooled vector and, side by side, half the token sequence;
T5-XXL the rest), an MMDiT transformer over 2x2 patches of 16-channel latents, and flow-matching training as
diffusers' ``train_dreambooth_lora_sd3.py`` / ``train_dreambooth_sd3.py`` do it:

- timesteps: ``u`` from the weighting scheme's density (``logit_normal``, mean 0, std 1), the index
  ``int(u * 1000)`` into the training scheduler's own (shifted: SD3.5's ``shift`` is 3.0) timesteps and sigmas;
- noise: ``x_t = (1 - sigma) x_0 + sigma * noise``;
- the transformer is called with that timestep; its output is preconditioned as in EDM
  (``precondition_outputs=1``, the scripts' default): ``x_t - sigma * output`` is compared with ``x_0``;
- loss weights from ``compute_loss_weighting_for_sd3`` (all ones for ``logit_normal``).

Large (38 blocks, 8.1B parameters) and Medium (24 MMDiT-X blocks with a second attention in the first 13,
2.2B) share the class; the variant is read from the transformer's config (``dual_attention_layers``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hubtools.families.flow_matching import (
    FlowMatchingFamily, logit_normal_noisy_batch, real_shapes_in_bf16, tiny_flow_matching_vae,
)
from hubtools.families.base import (
    Conditioning, License, MemoryProfile, NoisyBatch, SamplingDefaults, lora_profiles,
)

if TYPE_CHECKING:  # importing a family imports no torch: its operations do when they run
    import torch

_TINY_SEED = 3535
_TINY_RESOLUTION = 64

# The training step's settings, as the diffusers scripts default them.
WEIGHTING_SCHEME = "logit_normal"
PRECONDITION_OUTPUTS = True
# T5 tokens a caption is padded/truncated to in training (the scripts' --max_sequence_length default; the
# pipeline itself reads up to 256 at sampling time).
TRAINING_T5_TOKENS = 77
CLIP_TOKENS = 77


_LICENSE_NOTE = ("Stability AI Community License: free for research, non-commercial use, and commercial use by "
                 "individuals and organisations with less than USD 1M in total annual revenue; above that, "
                 "commercial use needs an Enterprise licence from Stability AI")


# The same licence for every SD3.5 (and SD3 Medium) release; the Hub's name for it, and Stability AI's page.
LICENSE = License("other", name="stabilityai-ai-community",
                  link="https://stability.ai/community-license-agreement", note=_LICENSE_NOTE)


# Memory profiles, largest first,
# sized from the parameter counts of the real shapes (benchmarks/sd35_configs.json, built on the meta device
# by tests/test_family_sd3.py): SD3.5 Large's frozen parts in bf16 are ~27 GB (transformer 8.06B, T5-XXL 4.76B,
# CLIP-G 0.69B, CLIP-L 0.12B, VAE 0.08B); a full fine-tune (16 bytes a trained parameter) would need ~120 GiB
# before activations, so every profile is a LoRA one, as for FLUX.1. Estimates until bench_train.py measures
# them on a GPU.
MEMORY_PROFILES: tuple[MemoryProfile, ...] = lora_profiles(
    48, 36, 30, " (SD3.5 Medium needs far less; lower --resolution below this)")


class StableDiffusion3(FlowMatchingFamily):
    name = "sd3"
    title = "Stable Diffusion 3.5"
    pipeline_class_name = "StableDiffusion3Pipeline"
    denoiser = "transformer"
    text_encoders = ("text_encoder", "text_encoder_2", "text_encoder_3")  # CLIP-L, CLIP-G, T5-XXL
    tokenizers = ("tokenizer", "tokenizer_2", "tokenizer_3")
    trainable_text_encoders = ("text_encoder", "text_encoder_2")  # the two CLIPs, as diffusers' --train_text_encoder
    # diffusers' script's default --lora_layers: the joint attention's image and text projections
    denoiser_lora_targets = (
        "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
        "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v",
    )
    tiny_repo_id = "hubtools/tiny-sd3"
    default_resolution = 1024
    card_dtype = "torch.bfloat16"
    card_tag = "sd3"
    tiny_card_tags = ("sd3", "stable-diffusion")
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {"image_encoder": None, "feature_extractor": None}
    swaps_scheduler = False  # it samples with the flow-matching Euler scheduler it was trained for
    pipeline_sizes_itself = True  # the transformer's sample_size: 1024 px for SD3.5, 64 for the tiny model
    patch_size = 2
    memory_profiles = MEMORY_PROFILES
    # benchmarks/bench_train.py builds the real shapes from this file (--variant large|medium)
    benchmark_configs = "sd35_configs.json"
    benchmark_variants = ("large", "medium")
    # ComfyUI (and Forge) read diffusers' SD3 LoRA keys (``transformer.<module>.lora_A/B``,
    # ``text_encoder(_2).text_model...``) as they are, with a per-module ``alpha`` when the file has one: the
    # second file is the same tensors plus those alphas (diffusers' own file keeps alpha in its metadata).
    kohya_lora = True
    kohya_lora_layout = "ComfyUI's layout: diffusers' keys with a per-module alpha"
    kohya_lora_readers = "ComfyUI and Forge"

    # -- variants and defaults -----------------------------------------------------------------------------

    def variant(self, denoiser_config: dict[str, Any]) -> str:
        """``medium`` (MMDiT-X: dual attention layers) or ``large`` (3.5 Large and Large Turbo share a config)."""
        return "medium" if denoiser_config.get("dual_attention_layers") else "large"

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        """The model cards' own: Large 28 steps at guidance 3.5, Medium 40 steps at 4.5 (Large Turbo, not told
        apart by its config, draws in 4 steps at guidance 0: set --guidance and steps for it)."""
        if self.variant(denoiser_config) == "medium":
            return SamplingDefaults(guidance_scale=4.5, num_inference_steps=40, guidance_scales=(3.5, 4.5, 5.5))
        return SamplingDefaults(guidance_scale=3.5, num_inference_steps=28, guidance_scales=(2.5, 3.5, 4.5))

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return LICENSE

    # -- training ------------------------------------------------------------------------------------------

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        ids = {}
        for encoder, name, length in (("text_encoder", "tokenizer", CLIP_TOKENS),
                                      ("text_encoder_2", "tokenizer_2", CLIP_TOKENS),
                                      ("text_encoder_3", "tokenizer_3", TRAINING_T5_TOKENS)):
            tokenizer = parts[name]
            ids[encoder] = tokenizer(captions, padding="max_length", max_length=length, truncation=True,
                                     add_special_tokens=True, return_tensors="pt").input_ids.to(device)
        return ids

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """As the script's ``encode_prompt``: each CLIP's penultimate hidden states (side by side, zero-padded
        to T5's width) followed by T5's last hidden states along the tokens; the CLIPs' projected pooled
        outputs side by side."""
        import torch

        sequences, pooled = [], []
        for name in ("text_encoder", "text_encoder_2"):
            output = text_encoders[name](token_ids[name], output_hidden_states=True)
            pooled.append(output[0])
            sequences.append(output.hidden_states[-2])
        clip = torch.cat(sequences, dim=-1)
        t5 = text_encoders["text_encoder_3"](token_ids["text_encoder_3"])[0]
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Conditioning({"prompt_embeds": torch.cat([clip, t5.to(clip.dtype)], dim=-2),
                             "pooled_prompt_embeds": torch.cat(pooled, dim=-1)})

    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        return logit_normal_noisy_batch(scheduler, latents, generator, device, WEIGHTING_SCHEME,
                                        target=latents if PRECONDITION_OUTPUTS else None)

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        output = denoiser(hidden_states=model_input, timestep=timesteps,
                          encoder_hidden_states=conditioning["prompt_embeds"],
                          pooled_projections=conditioning["pooled_prompt_embeds"], return_dict=False)[0]
        if not PRECONDITION_OUTPUTS:
            return output
        # the scheduler's timesteps are its sigmas times num_train_timesteps (1000 for every SD3 checkpoint)
        sigmas = (timesteps.float() / _NUM_TRAIN_TIMESTEPS).view(-1, 1, 1, 1).to(output.dtype)
        return output * (-sigmas) + model_input

    def use_fast_attention(self, denoiser) -> None:
        """SD3's joint-attention processors already call PyTorch's SDPA (a plain one would break them)."""

    # -- the ComfyUI copy of a LoRA ------------------------------------------------------------------------

    def kohya_lora_state(self, diffusers_file) -> dict[str, torch.Tensor]:
        """The diffusers file's tensors plus, per adapted module, ``<module>.alpha`` (ComfyUI scales a LoRA by
        alpha / rank, and by 1 when the file has no alpha)."""
        from hubtools.families.lora_files import with_module_alphas

        return with_module_alphas(diffusers_file)

    def build_full_size_pipeline(self, configs: dict[str, Any], variant: str | None = None):
        return build_full_size_pipeline(configs, variant or self.benchmark_variants[0])

    # -- the tiny random model -----------------------------------------------------------------------------

    def build_tiny_pipeline(self):
        """CLIP-L- and CLIP-G-shaped encoders (32 wide each, projected), a small T5 encoder 64 wide (the CLIPs'
        64 fit in it, as 768 + 1280 fit in T5-XXL's 4096), a two-block MMDiT-X transformer (dual attention and
        RMS q/k norm in the first, as SD3.5 Medium) over 2x2 patches of 16-channel latents, an 8x VAE with
        SD3's shift and scale, SD3.5's scheduler (shift 3): 64 px."""
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
        from diffusers import StableDiffusion3Pipeline
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel

        from hubtools.tokenizer import build_clip_tokenizer, build_t5_tokenizer

        tokenizer = build_clip_tokenizer()
        tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer.name_or_path, pad_token="!")  # as SD3's CLIP-G one
        tokenizer_3 = build_t5_tokenizer()
        latent_channels, clip_hidden, t5_hidden = 16, 32, 64

        def clip(layers: int) -> CLIPTextModelWithProjection:
            return CLIPTextModelWithProjection(CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=clip_hidden, intermediate_size=64, num_hidden_layers=layers,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=clip_hidden,
            ))

        with torch.random.fork_rng():
            torch.manual_seed(_TINY_SEED)
            transformer = SD3Transformer2DModel(
                sample_size=_TINY_RESOLUTION // 8, patch_size=2, in_channels=latent_channels, num_layers=2,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=t5_hidden,
                caption_projection_dim=32, pooled_projection_dim=2 * clip_hidden, out_channels=latent_channels,
                pos_embed_max_size=32, dual_attention_layers=(0,), qk_norm="rms_norm",
            )
            vae = tiny_flow_matching_vae(shift_factor=0.0609, scaling_factor=1.5305)
            text_encoder, text_encoder_2 = clip(2), clip(3)
            text_encoder_3 = T5EncoderModel(T5Config(
                vocab_size=len(tokenizer_3), d_model=t5_hidden, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, pad_token_id=tokenizer_3.pad_token_id,
                eos_token_id=tokenizer_3.eos_token_id, decoder_start_token_id=tokenizer_3.pad_token_id,
                feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
            ))
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=_NUM_TRAIN_TIMESTEPS, shift=3.0)
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
            text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3,
            tokenizer_3=tokenizer_3,
        )


_NUM_TRAIN_TIMESTEPS = 1000
VARIANTS = ("large", "medium")
_CLIP_VOCAB = 49408  # CLIP's BPE vocabulary (its last two ids are <|startoftext|>, <|endoftext|>)


def real_shape_models(configs: dict[str, Any], variant: str = "large") -> dict[str, torch.nn.Module]:
    """Random-weight models of SD3.5's real shapes (``configs``: benchmarks/sd35_configs.json), on the current
    default device and dtype: under ``torch.device("meta")`` they cost nothing and count the parameters."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    def clip(settings: dict[str, Any]) -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(CLIPTextConfig(**settings, vocab_size=_CLIP_VOCAB, bos_token_id=49406,
                                                          eos_token_id=49407, pad_token_id=49407))

    return {
        "transformer": SD3Transformer2DModel(**configs["transformer"][variant]),
        "vae": AutoencoderKL(**configs["vae"]),
        "text_encoder": clip(configs["text_encoder"]),
        "text_encoder_2": clip(configs["text_encoder_2"]),
        "text_encoder_3": T5EncoderModel(T5Config(**configs["text_encoder_3"], is_encoder_decoder=False,
                                                  use_cache=False, pad_token_id=0, eos_token_id=1)),
    }


def build_full_size_pipeline(configs: dict[str, Any], variant: str = "large"):
    """SD3.5 Large or Medium of the real size with random weights, in bf16 (as it ships), for the benchmark."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    from hubtools.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    tokenizer = build_clip_tokenizer()
    models = real_shapes_in_bf16(real_shape_models, configs, variant)
    return StableDiffusion3Pipeline(
        **models, tokenizer=tokenizer, tokenizer_2=CLIPTokenizer.from_pretrained(tokenizer.name_or_path, pad_token="!"),
        tokenizer_3=build_t5_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"]),
    )
