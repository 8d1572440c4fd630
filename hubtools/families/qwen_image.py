"""Qwen-Image (``QwenImagePipeline``, LoRA): a Qwen2.5-VL text encoder read through the pipeline's chat
template (its last hidden states, the template's first 34 tokens dropped, a mask over each caption's own
tokens), a 20B MMDiT over 2x2-packed 16-channel latents of a Wan-style VAE (per-channel mean and std), and
flow matching as diffusers' ``train_dreambooth_lora_qwen_image.py`` does it:

- timesteps: ``u`` uniform (the script's default weighting scheme ``none``), the index ``int(u * 1000)``
  into the training scheduler's own timesteps and sigmas (the script loads it with ``shift=3.0``, which
  changes nothing while the scheduler shifts dynamically, as Qwen-Image's does);
- noise: ``x_t = (1 - sigma) x_0 + sigma * noise``; target ``noise - x_0``; the transformer is called with
  ``timestep / 1000``, the image's ``img_shapes`` and the captions' mask; loss weights 1.

The script trains the transformer only (no text-encoder LoRA), so does this family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubtools.families.flow_matching import FlowMatchingFamily, logit_normal_noisy_batch, real_shapes_in_bf16
from hubtools.families.base import (
    Conditioning, License, MemoryProfile, NoisyBatch, SamplingDefaults, lora_profiles,
)

if TYPE_CHECKING:  # importing a family imports no torch: its operations do when they run
    import torch

_TINY_SEED = 2025
_TINY_RESOLUTION = 64

WEIGHTING_SCHEME = "none"
TRAINING_SHIFT = 3.0  # what the script loads the scheduler with (inert under dynamic shifting)
MAX_SEQUENCE_LENGTH = 512  # the script's --max_sequence_length default: caption tokens after the template
# The pipeline's chat template and the count of its tokens before the caption (``prompt_template_encode`` and
# ``prompt_template_encode_start_idx`` of QwenImagePipeline); the tiny tokenizer splits that prefix into
# exactly as many tokens as Qwen2.5-VL's does.
PROMPT_TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                   "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                   "<|im_end|>\n<|im_start|>assistant\n")
TEMPLATE_TOKENS = 34
TOKENIZER_MAX_LENGTH = 1024


# Wan 2.1's VAE statistics, which Qwen-Image's VAE config carries: latents are (x - mean) / std per channel.
LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916)

# Qwen-Image's scheduler (scheduler/scheduler_config.json of Qwen/Qwen-Image).
SCHEDULER_CONFIG = {
    "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 8192,
    "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02, "stochastic_sampling": False,
    "time_shift_type": "exponential", "use_beta_sigmas": False, "use_dynamic_shifting": True,
    "use_exponential_sigmas": False, "use_karras_sigmas": False,
}

# From the real shapes' parameter counts (benchmarks/qwen_image_configs.json, counted on the meta device by
# tests/test_family_qwen_image.py): a 20.4B transformer, an 8.3B Qwen2.5-VL and a 0.13B VAE are ~54 GiB of
# frozen bf16 weights before the LoRA, its optimizer and activations, so every profile is a LoRA one (a full
# fine-tune would need ~305 GiB). Estimates until bench_train.py measures them on a GPU.
MEMORY_PROFILES: tuple[MemoryProfile, ...] = lora_profiles(80, 72, 64)


class QwenImage(FlowMatchingFamily):
    name = "qwen-image"
    title = "Qwen-Image"
    pipeline_class_name = "QwenImagePipeline"
    denoiser = "transformer"
    text_encoders = ("text_encoder",)  # Qwen2.5-VL
    tokenizers = ("tokenizer",)
    first_tokenizer_is_clip = False  # Qwen2.5-VL's byte-level BPE: the identifier report lists its split too
    trainable_text_encoders = ()  # the script adapts the transformer only
    denoiser_lora_targets = ("to_k", "to_q", "to_v", "to_out.0")  # the script's default --lora_layers
    tiny_repo_id = "hubtools/tiny-qwen-image"
    training_shift = TRAINING_SHIFT
    default_resolution = 1024
    card_dtype = "torch.bfloat16"
    card_tag = "qwen-image"
    tiny_card_tags = ("qwen-image",)
    swaps_scheduler = False
    pipeline_sizes_itself = False  # QwenImagePipeline draws 1024 px unless told
    patch_size = 2
    memory_profiles = MEMORY_PROFILES
    benchmark_configs = "qwen_image_configs.json"  # benchmarks/bench_train.py builds the real shapes from it
    benchmark_variants = ("",)
    # ComfyUI and Forge read diffusers' Qwen-Image LoRA keys as they are; the copy adds per-module alphas.
    kohya_lora = True
    kohya_lora_layout = "ComfyUI's layout: diffusers' keys with a per-module alpha"
    kohya_lora_readers = "ComfyUI and Forge"

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        """Qwen-Image's model card: 50 steps, true classifier-free guidance 4 against a blank negative prompt
        (``true_cfg_scale``; its ``guidance_scale`` is for guidance-distilled checkpoints only)."""
        return SamplingDefaults(guidance_scale=4.0, num_inference_steps=50, guidance_scales=(3.0, 4.0, 5.0),
                                extra={"negative_prompt": " "})

    def guidance_kwargs(self, guidance: float) -> dict[str, Any]:
        """True classifier-free guidance: QwenImagePipeline's ``guidance_scale`` only feeds guidance-distilled
        checkpoints (it warns and ignores it otherwise)."""
        return {"true_cfg_scale": guidance}

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return License("apache-2.0", note="Apache 2.0: commercial use allowed")

    # -- training ------------------------------------------------------------------------------------------

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """The captions in the chat template, padded to the longest (the pipeline's own tokenization)."""
        tokens = parts["tokenizer"]([PROMPT_TEMPLATE.format(c) for c in captions],
                                    max_length=TOKENIZER_MAX_LENGTH + TEMPLATE_TOKENS, padding=True, truncation=True,
                                    return_tensors="pt")
        return {"text_encoder": tokens.input_ids.to(device), "attention_mask": tokens.attention_mask.to(device)}

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """As ``QwenImagePipeline.encode_prompt``: the last hidden states of each caption's own tokens after the
        template's first 34, zero-padded to the longest, with their mask; at most 512 tokens (the script's)."""
        import torch

        mask = token_ids["attention_mask"]
        hidden = text_encoders["text_encoder"](input_ids=token_ids["text_encoder"], attention_mask=mask,
                                               output_hidden_states=True).hidden_states[-1]
        bool_mask = mask.bool()
        split = torch.split(hidden[bool_mask], bool_mask.sum(dim=1).tolist(), dim=0)
        split = [states[TEMPLATE_TOKENS:] for states in split]
        longest = max(states.size(0) for states in split)
        embeds = torch.stack([torch.cat([s, s.new_zeros(longest - s.size(0), s.size(1))]) for s in split])
        masks = torch.stack([torch.cat([torch.ones(s.size(0), dtype=torch.long, device=s.device),
                                        torch.zeros(longest - s.size(0), dtype=torch.long, device=s.device)])
                             for s in split])
        return Conditioning({"prompt_embeds": embeds[:, :MAX_SEQUENCE_LENGTH],
                             "prompt_embeds_mask": masks[:, :MAX_SEQUENCE_LENGTH]})

    def latent_scaling(self, vae_config) -> tuple[float | None, float]:  # per channel: latent_distribution
        return None, 1.0

    def latent_distribution(self, vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images as one-frame videos through the Wan-style VAE; its distribution normalised per channel
        as the script normalises its samples, ``(x - latents_mean) * (1 / latents_std)``, so that
        ``mean + std * noise`` is that normalised sample; back to (B, C, h, w)."""
        import torch

        dist = vae.encode(pixels.unsqueeze(2)).latent_dist
        channels = vae.config.z_dim
        shift = torch.tensor(vae.config.latents_mean, device=dist.mean.device).view(1, channels, 1, 1, 1)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std, device=dist.mean.device).view(1, channels, 1, 1, 1)
        return ((dist.mean - shift) * inverse_std).squeeze(2), (dist.std * inverse_std).squeeze(2)

    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        return logit_normal_noisy_batch(scheduler, latents, generator, device, WEIGHTING_SCHEME)

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        import torch
        from diffusers import QwenImagePipeline

        batch, channels, height, width = model_input.shape
        packed = QwenImagePipeline._pack_latents(model_input, batch, channels, height, width)
        prediction = denoiser(
            hidden_states=packed, encoder_hidden_states=conditioning["prompt_embeds"],
            encoder_hidden_states_mask=conditioning["prompt_embeds_mask"].to(torch.long),
            timestep=timesteps / 1000, img_shapes=[(1, height // 2, width // 2)] * batch, return_dict=False,
        )[0]
        return QwenImagePipeline._unpack_latents(prediction, height * self.vae_scale_factor,
                                                 width * self.vae_scale_factor, self.vae_scale_factor).squeeze(2)

    def use_fast_attention(self, denoiser) -> None:
        """Qwen-Image's own attention processors already call PyTorch's SDPA."""

    def kohya_lora_state(self, diffusers_file) -> dict[str, torch.Tensor]:
        from hubtools.families.lora_files import with_module_alphas

        return with_module_alphas(diffusers_file)

    def build_full_size_pipeline(self, configs: dict[str, Any], variant: str | None = None):
        """Qwen-Image of the real size with random weights, in bf16 (as it ships), for the benchmark."""
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

        models = real_shapes_in_bf16(real_shape_models, configs)
        return QwenImagePipeline(**models, tokenizer=build_qwen_tokenizer(),
                                 scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG))

    # -- the tiny random model -----------------------------------------------------------------------------

    def build_tiny_pipeline(self):
        """A two-layer Qwen2.5-VL (32 wide, a two-block vision tower it never uses here) with an offline
        byte-level BPE tokenizer, a two-block transformer over 2x2-packed 16-channel latents, an 8x Wan-style
        VAE with Qwen-Image's latent statistics, Qwen-Image's scheduler: 64 px."""
        import torch
        from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                               QwenImageTransformer2DModel)
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        tokenizer = build_qwen_tokenizer()
        hidden, latent_channels = 32, 16
        ids = tokenizer.convert_tokens_to_ids
        with torch.random.fork_rng():
            torch.manual_seed(_TINY_SEED)
            transformer = QwenImageTransformer2DModel(
                patch_size=2, in_channels=4 * latent_channels, out_channels=latent_channels, num_layers=2,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=hidden, guidance_embeds=False,
                axes_dims_rope=(4, 6, 6),
            )
            vae = AutoencoderKLQwenImage(
                base_dim=8, z_dim=latent_channels, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True], dropout=0.0, latents_mean=list(LATENTS_MEAN),
                latents_std=list(LATENTS_STD),
            )
            config = Qwen2_5_VLConfig(
                text_config={"hidden_size": hidden, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
                             "rope_scaling": {"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},
                             "rope_theta": 1000000.0, "bos_token_id": None, "eos_token_id": ids("<|im_end|>"),
                             "pad_token_id": ids("<|endoftext|>")},
                vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                               "out_hidden_size": hidden},
                hidden_size=hidden, vocab_size=len(tokenizer), vision_start_token_id=ids("<|vision_start|>"),
                vision_end_token_id=ids("<|vision_end|>"), vision_token_id=ids("<|vision_pad|>"),
                image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"), bos_token_id=None,
                eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
            )
            text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
        scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
        return QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                 transformer=transformer)


def real_shape_models(configs: dict[str, Any]) -> dict[str, Any]:
    """Random-weight models of Qwen-Image's real shapes (``configs``: benchmarks/qwen_image_configs.json) on the
    current default device and dtype: under ``torch.device("meta")`` they cost nothing and count parameters."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return {
        "transformer": QwenImageTransformer2DModel(**configs["transformer"]),
        "vae": AutoencoderKLQwenImage(**configs["vae"], latents_mean=list(LATENTS_MEAN), latents_std=list(LATENTS_STD)),
        "text_encoder": Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**configs["text_encoder"])),
    }


_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_QWEN_WORDS = 4000


def build_qwen_tokenizer():
    """A ``Qwen2Tokenizer`` built offline: a byte-level BPE (any text encodes) whose merges make whole tokens
    of the CLIP vocabulary's most frequent words and of the chat template's, so the template's prefix is
    34 tokens as with Qwen2.5-VL's own; Qwen's special tokens. Deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    from hubtools.tokenizer import clip_vocab_and_merges

    vocab, _ = clip_vocab_and_merges()
    words = [token[:-4] for token in sorted(vocab, key=vocab.get)
             if token.endswith("</w>") and token[:-4].isascii() and token[:-4].isalpha()][:_QWEN_WORDS]
    template_words = PROMPT_TEMPLATE.replace("<|im_start|>", " ").replace("<|im_end|>", " ").replace("{}", " ")
    words = sorted(set(words) | {w.strip(",:") for w in template_words.split()})
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, show_progress=False,
                                  special_tokens=list(_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(([word, " " + word] for word in words), trainer=trainer)
    return Qwen2Tokenizer(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
                          unk_token=None, model_max_length=131072, errors="replace")
