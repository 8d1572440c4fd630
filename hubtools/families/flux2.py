"""FLUX.2 [dev] (``Flux2Pipeline``, LoRA) and FLUX.2 [klein] (``Flux2KleinPipeline``, LoRA and full; 4B and 9B):
one transformer design, two text encoders. Training follows diffusers' ``train_dreambooth_lora_flux2.py`` and
``train_dreambooth_lora_flux2_klein.py``, which differ only in the text encoder and the guidance embedding:

- latents: the VAE's mode (not a sample), cut into 2x2 patches (32 channels -> 128) and normalised by the VAE's
  batch-norm running statistics, ``(x - bn.running_mean) / sqrt(bn.running_var + eps)``;
- timesteps: ``u`` uniform (the scripts' default weighting scheme ``none``), the index ``int(u * 1000)`` into
  the training scheduler's own timesteps and sigmas (unshifted: FLUX.2's scheduler shifts dynamically, at
  sampling only); ``x_t = (1 - sigma) x_0 + sigma noise``, target ``noise - x_0``, every example weighted 1;
- the transformer sees the patch tokens with their (t, h, w, l) position ids, the prompt's with theirs,
  ``timestep / 1000`` and, where it has a guidance embedding ([dev]), the scripts' training guidance 3.5;
- text: [dev] Mistral Small 3.1 through its chat template with FLUX.2's system message, [klein] Qwen3 through
  Qwen's chat markup (thinking off); both stack the hidden states of three layers ((10, 20, 30) and (9, 18, 27))
  into one wide embedding. The text encoder is frozen (the scripts' recipe).

Latents stay in the VAE's (B, 32, H/8, W/8) layout between the hooks (as FLUX.1's): the step and the model call
patchify inside, which only reorders values, so noise, timesteps and target are the script's exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

from hubtools.errors import ConfigError
from hubtools.families.base import (
    Conditioning, License, NoisyBatch, SamplingDefaults, lora_profiles, unwrapped,
)
from hubtools.families.flow_matching import TINY_RESOLUTION, FlowMatchingFamily, real_shapes_in_bf16

_TINY_SEED = 2026
# The scripts' defaults: --weighting_scheme none (uniform u, no loss weighting), --guidance_scale 3.5 (fed to
# the guidance embedding of the models that have one), --max_sequence_length 512.
WEIGHTING_SCHEME = "none"
TRAINING_GUIDANCE = 3.5
MAX_SEQUENCE_LENGTH = 512
# The scripts' default LoRA targets: the attention projections of the double-stream blocks, the fused
# qkv+MLP input and the output of the single-stream blocks (by index: the double blocks' ``attn.to_out`` is a
# list, not a layer). 48 covers [dev]'s single blocks; the klein models have 20 or 24.
LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj",
                *(f"single_transformer_blocks.{i}.attn.to_out" for i in range(48)))

# FLUX.1-dev's scheduler, which diffusers' FLUX.2 conversion gives both models: dynamic shifting at sampling.
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}

# Checked against the model cards' facts (see the report of issue 22): [dev] and [klein] 9B are under the FLUX
# Non-Commercial License (outputs may be used commercially, the weights may not); [klein] 4B is Apache 2.0.
DEV_LICENSE = License(
    "other", name="flux-dev-non-commercial-license",
    link="https://huggingface.co/black-forest-labs/FLUX.2-dev/blob/main/LICENSE.md",
    note="FLUX [dev] Non-Commercial License: non-commercial use of the weights only",
)
KLEIN_9B_LICENSE = License(
    "other", name="flux-non-commercial-license",
    link="https://huggingface.co/black-forest-labs/FLUX.2-klein-9B/blob/main/LICENSE.md",
    note="FLUX Non-Commercial License: non-commercial use of the weights only",
)
# The klein size from the width of the text embedding the transformer reads (three Qwen3 layers stacked):
# Qwen3-4B (2560 wide) for the 4B, Qwen3-8B (4096) for the 9B.
KLEIN_SIZES = {3 * 2560: "4b", 3 * 4096: "9b"}


class _Flux2Family(FlowMatchingFamily):
    """What FLUX.2 [dev] and [klein] share: everything but the text encoder, the guidance embedding and the card."""

    denoiser = "transformer"
    text_encoders = ("text_encoder",)
    tokenizers = ("tokenizer",)
    first_tokenizer_is_clip = False  # the identifier is counted in the model's own tokenizer
    trainable_text_encoders = ()  # the scripts keep the LLM frozen
    denoiser_lora_targets = LORA_TARGETS
    default_resolution = 1024
    card_dtype = "torch.bfloat16"
    # Beside the diffusers file, the same LoRA in Black Forest Labs' module names, as ComfyUI and ai-toolkit
    # write and read FLUX.2 LoRAs (``bfl_lora_state``); diffusers' FLUX.2 loader reads it too.
    kohya_lora = True
    kohya_lora_layout = ("Black Forest Labs' layout (`diffusion_model.double_blocks.*` / `single_blocks.*`, q, k and "
                         "v fused, the adapter's scale in the weights)")
    kohya_lora_readers = "ComfyUI and ai-toolkit (diffusers reads it too)"
    swaps_scheduler = False
    pipeline_sizes_itself = False  # draws 1024 px unless told
    patch_size = 2  # 2x2 latent patches per token: image sides are multiples of 16 px
    benchmark_configs = "flux2_configs.json"
    hidden_state_layers: ClassVar[tuple[int, ...]]

    def latent_scaling(self, vae_config) -> tuple[float | None, float]:  # per channel: latent_distribution
        return None, 1.0

    def latent_distribution(self, vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scripts' latents: the distribution's mode, normalised per patch channel by the VAE's batch-norm
        statistics; back in the VAE's layout. std 0: nothing is sampled."""
        import torch

        mode = vae.encode(pixels).latent_dist.mode()
        normalised = unpatchify((patchify(mode) - _bn_mean(vae, mode)) / _bn_std(vae, mode))
        return normalised, torch.zeros_like(normalised)

    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        """The scripts' step on the patchified latents: noise, then u ~ U(0, 1) picking one of the scheduler's
        training timesteps and its sigma; ``x_t = (1 - sigma) x_0 + sigma noise``; target ``noise - x_0``."""
        import torch
        from diffusers.training_utils import compute_density_for_timestep_sampling

        model_input = patchify(latents)
        noise = torch.randn(model_input.shape, generator=generator).to(device)
        u = compute_density_for_timestep_sampling(WEIGHTING_SCHEME, model_input.shape[0], logit_mean=0.0,
                                                  logit_std=1.0, mode_scale=1.29, generator=generator)
        indices = (u * scheduler.config.num_train_timesteps).long()
        timesteps = scheduler.timesteps[indices].to(device)
        sigmas = scheduler.sigmas[indices].to(device=device, dtype=latents.dtype).view(-1, 1, 1, 1)
        noisy = (1.0 - sigmas) * model_input + sigmas * noise
        return NoisyBatch(unpatchify(noisy), timesteps, unpatchify(noise - model_input), None)

    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        import torch
        from diffusers import Flux2Pipeline

        patches = patchify(model_input)
        prompt_embeds = conditioning["prompt_embeds"]
        image_ids = Flux2Pipeline._prepare_latent_ids(patches).to(model_input.device)
        text_ids = Flux2Pipeline._prepare_text_ids(prompt_embeds).to(model_input.device)
        packed = Flux2Pipeline._pack_latents(patches)
        guidance = None
        if unwrapped(denoiser).config.guidance_embeds:
            guidance = torch.full((patches.shape[0],), TRAINING_GUIDANCE, device=model_input.device)
        prediction = denoiser(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                              encoder_hidden_states=prompt_embeds, txt_ids=text_ids, img_ids=image_ids,
                              return_dict=False)[0]
        prediction = prediction[:, : packed.size(1)]
        return unpatchify(Flux2Pipeline._unpack_latents_with_ids(prediction, image_ids))

    def stacked_hidden_states(self, encoder, token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """As the pipelines' ``encode_prompt``: the hidden states of the family's three layers, side by side."""
        import torch

        output = encoder(input_ids=token_ids["text_encoder"], attention_mask=token_ids["text_encoder_mask"],
                         output_hidden_states=True, use_cache=False)
        stacked = torch.stack([output.hidden_states[k] for k in self.hidden_state_layers], dim=1)
        batch, layers, length, width = stacked.shape
        return Conditioning({"prompt_embeds": stacked.permute(0, 2, 1, 3).reshape(batch, length, layers * width)})

    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        return self.stacked_hidden_states(text_encoders["text_encoder"], token_ids)

    def use_fast_attention(self, denoiser) -> None:
        """FLUX.2's attention processors already dispatch to PyTorch's SDPA."""

    def kohya_lora_state(self, diffusers_file) -> dict[str, torch.Tensor]:
        return bfl_lora_state(diffusers_file)

    def build_full_size_pipeline(self, configs: dict[str, Any], variant: str | None = None):
        """The real shapes with random weights, in bf16 (as they ship), for the benchmark."""
        models = real_shapes_in_bf16(real_shape_models, configs, variant or self.benchmark_variants[0])
        return self._tiny_pipeline(models, self.tiny_tokenizer())

    def build_tiny_pipeline(self):
        """A 28- or 30-layer encoder 32 wide (the pipelines read layers up to 27 or 30), a one-double-block,
        two-single-block FLUX.2 transformer over 2x2 patches of 32-channel latents, an 8x FLUX.2 VAE with
        non-trivial batch-norm statistics, FLUX.2's scheduler: 64 px, deterministic."""
        import torch
        from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

        tokenizer = self.tiny_tokenizer()
        latent_channels, text_hidden = 32, 32
        with torch.random.fork_rng():
            torch.manual_seed(_TINY_SEED)
            transformer = Flux2Transformer2DModel(
                patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=2,
                attention_head_dim=32, num_attention_heads=4, joint_attention_dim=3 * text_hidden,
                timestep_guidance_channels=64, axes_dims_rope=(8, 8, 8, 8), guidance_embeds=self.tiny_guidance_embeds,
            )
            vae = AutoencoderKLFlux2(
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                latent_channels=latent_channels, norm_num_groups=8, sample_size=TINY_RESOLUTION,
                use_quant_conv=False, use_post_quant_conv=False,
            )
            with torch.no_grad():  # batch-norm statistics of their own, or the normalisation is invisible
                channels = vae.bn.running_mean.numel()
                vae.bn.running_mean.copy_(torch.linspace(-0.2, 0.2, channels))
                vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, channels))
            text_encoder = self.tiny_text_encoder(tokenizer, text_hidden)
        return self._tiny_pipeline({"transformer": transformer, "vae": vae, "text_encoder": text_encoder}, tokenizer)

    def _tiny_pipeline(self, models: dict[str, Any], tokenizer):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return self.pipeline_class()(**models, tokenizer=tokenizer,
                                     scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG))

    tiny_guidance_embeds: ClassVar[bool]

    def tiny_tokenizer(self):
        raise NotImplementedError

    def tiny_text_encoder(self, tokenizer, hidden: int):
        raise NotImplementedError


class Flux2(_Flux2Family):
    """FLUX.2 [dev]: 32B transformer with a guidance embedding, Mistral Small 3.1 (24B) as the text encoder."""

    name = "flux2"
    title = "FLUX.2 [dev]"
    pipeline_class_name = "Flux2Pipeline"
    tiny_repo_id = "hubtools/tiny-flux2"
    card_tag = "flux2"
    tiny_card_tags = ("flux2",)
    hidden_state_layers = (10, 20, 30)
    tiny_guidance_embeds = True
    benchmark_variants = ("dev",)
    # From the real shapes' parameter counts (benchmarks/flux2_configs.json, counted on the meta device by
    # tests/test_family_flux2.py): a 32.2B transformer and a 24.0B Mistral are ~105 GiB of frozen bf16 weights
    # before the LoRA, its optimizer and activations; a full fine-tune is not offered (the script trains LoRA).
    # Estimates until bench_train.py measures them on a GPU.
    memory_profiles = lora_profiles(140, 120, 112)

    def variant(self, denoiser_config: dict[str, Any]) -> str:
        return "dev"

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        """FLUX.2 [dev]'s model card and ``Flux2Pipeline``'s defaults: 50 steps, embedded guidance 4."""
        return SamplingDefaults(guidance_scale=4.0, num_inference_steps=50, guidance_scales=(3.0, 4.0, 5.0))

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        return DEV_LICENSE

    def check_method(self, method: str) -> None:
        if method == "full":
            raise ConfigError(f"{self.title} trains a LoRA only (as diffusers' script does; its 32B transformer does "
                              "not fit a full fine-tune): use --method lora")

    def check_training(self, method: str, denoiser, device: torch.device, shards: int = 1) -> None:
        self.check_method(method)

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """As ``Flux2Pipeline``: each caption as a user turn after FLUX.2's system message, in the tokenizer's
        (or processor's) chat template, padded to 512 tokens."""
        from diffusers.pipelines.flux2.pipeline_flux2 import SYSTEM_MESSAGE, format_input

        tokens = parts["tokenizer"].apply_chat_template(
            format_input(prompts=captions, system_message=SYSTEM_MESSAGE), add_generation_prompt=False,
            tokenize=True, return_dict=True, return_tensors="pt", padding="max_length", truncation=True,
            max_length=MAX_SEQUENCE_LENGTH)
        return {"text_encoder": tokens["input_ids"].to(device),
                "text_encoder_mask": tokens["attention_mask"].to(device)}

    def tiny_tokenizer(self):
        return build_mistral_tokenizer()

    def tiny_text_encoder(self, tokenizer, hidden: int):
        from transformers import Mistral3Config, Mistral3ForConditionalGeneration

        ids = tokenizer.convert_tokens_to_ids
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
        return Mistral3ForConditionalGeneration(Mistral3Config(
            text_config={"model_type": "mistral", "vocab_size": len(tokenizer), "hidden_size": hidden,
                         "intermediate_size": 64, "num_hidden_layers": 30, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 2 * MAX_SEQUENCE_LENGTH,
                         "rope_theta": 1000000000.0, "sliding_window": None, **special},
            vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 32, "image_size": 64, "patch_size": 16},
            image_token_index=ids("[IMG]"), spatial_merge_size=1, **special,
        )).eval()


class Flux2Klein(_Flux2Family):
    """FLUX.2 [klein]: 4B or 9B transformer without a guidance embedding, Qwen3 4B or 8B as the text encoder."""

    name = "flux2-klein"
    title = "FLUX.2 [klein]"
    pipeline_class_name = "Flux2KleinPipeline"
    tiny_repo_id = "hubtools/tiny-flux2-klein"
    card_tag = "flux2-klein"
    tiny_card_tags = ("flux2-klein",)
    hidden_state_layers = (9, 18, 27)
    tiny_guidance_embeds = False
    benchmark_variants = ("4b", "9b")
    # Sized for the 9B (benchmarks/flux2_configs.json): a 9.1B transformer and an 8.2B Qwen3 are ~32 GiB of
    # bf16 weights; the 4B (3.9B + 4.0B) fits each profile with room to spare. A full fine-tune (--method full)
    # is allowed where the GPU holds it (16 bytes a parameter). Estimates until measured on a GPU.
    memory_profiles = lora_profiles(48, 40, 36)

    def variant(self, denoiser_config: dict[str, Any]) -> str:
        """The size: ``4b`` or ``9b`` (read from the text embedding's width); '' for another shape."""
        return KLEIN_SIZES.get(denoiser_config.get("joint_attention_dim"), "")

    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        """``Flux2KleinPipeline``'s defaults, the base models' (the ones to train): 50 steps, classifier-free
        guidance 4 (the step-distilled checkpoints draw at 4 steps and ignore guidance)."""
        return SamplingDefaults(guidance_scale=4.0, num_inference_steps=50, guidance_scales=(3.0, 4.0, 5.0))

    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        """[klein] 4B is Apache 2.0; the 9B (and a size this cannot tell) the FLUX Non-Commercial License."""
        if self.variant(denoiser_config) == "4b":
            return License("apache-2.0", note="Apache 2.0: commercial use allowed")
        return KLEIN_9B_LICENSE

    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """As ``Flux2KleinPipeline``: each caption as one user turn of Qwen's chat markup, thinking off, padded
        to 512 tokens."""
        tokenizer = parts["tokenizer"]
        marked = [tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                                add_generation_prompt=True, enable_thinking=False)
                  for caption in captions]
        tokens = tokenizer(marked, return_tensors="pt", padding="max_length", truncation=True,
                           max_length=MAX_SEQUENCE_LENGTH)
        return {"text_encoder": tokens.input_ids.to(device), "text_encoder_mask": tokens.attention_mask.to(device)}

    def tiny_tokenizer(self):
        from hubtools.families.zimage import build_qwen_chat_tokenizer

        return build_qwen_chat_tokenizer()

    def tiny_text_encoder(self, tokenizer, hidden: int):
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(
            hidden_size=hidden, intermediate_size=64, num_hidden_layers=28, num_attention_heads=2,
            num_key_value_heads=2, head_dim=16, vocab_size=len(tokenizer), max_position_embeddings=MAX_SEQUENCE_LENGTH,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        )).eval()


# -- latent patches ------------------------------------------------------------------------------------------

def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2), FLUX.2's 2x2 patches (``Flux2Pipeline._patchify_latents``)."""
    from diffusers import Flux2Pipeline

    return Flux2Pipeline._patchify_latents(latents)


def unpatchify(patches: torch.Tensor) -> torch.Tensor:
    from diffusers import Flux2Pipeline

    return Flux2Pipeline._unpatchify_latents(patches)


def _bn_mean(vae, like: torch.Tensor) -> torch.Tensor:
    return vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)


def _bn_std(vae, like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like.device, like.dtype)


# -- the LoRA in Black Forest Labs' layout (ComfyUI, ai-toolkit) ----------------------------------------------

def _bfl_modules(double_blocks: list[int], single_blocks: list[int]) -> dict[str, tuple[str, ...]]:
    """BFL's FLUX.2 module names -> the diffusers modules each one is (several: one fused Linear in BFL's model)."""
    layout: dict[str, tuple[str, ...]] = {}
    for i in double_blocks:
        block = f"transformer_blocks.{i}"
        layout.update({
            f"double_blocks.{i}.img_attn.qkv": (f"{block}.attn.to_q", f"{block}.attn.to_k", f"{block}.attn.to_v"),
            f"double_blocks.{i}.img_attn.proj": (f"{block}.attn.to_out.0",),
            f"double_blocks.{i}.txt_attn.qkv": (f"{block}.attn.add_q_proj", f"{block}.attn.add_k_proj",
                                                f"{block}.attn.add_v_proj"),
            f"double_blocks.{i}.txt_attn.proj": (f"{block}.attn.to_add_out",),
            f"double_blocks.{i}.img_mlp.0": (f"{block}.ff.linear_in",),
            f"double_blocks.{i}.img_mlp.2": (f"{block}.ff.linear_out",),
            f"double_blocks.{i}.txt_mlp.0": (f"{block}.ff_context.linear_in",),
            f"double_blocks.{i}.txt_mlp.2": (f"{block}.ff_context.linear_out",),
        })
    for i in single_blocks:
        block = f"single_transformer_blocks.{i}"
        layout.update({f"single_blocks.{i}.linear1": (f"{block}.attn.to_qkv_mlp_proj",),
                       f"single_blocks.{i}.linear2": (f"{block}.attn.to_out",)})
    return layout


def bfl_lora_state(diffusers_file) -> dict[str, torch.Tensor]:
    """A FLUX.2 diffusers LoRA file in BFL's module names, the layout ComfyUI and ai-toolkit use
    (``diffusion_model.<module>.lora_A.weight`` / ``lora_B.weight``). Where BFL's model fuses q, k and v into one
    Linear, the members' down weights are concatenated and their up weights placed block-diagonally, so the fused
    module's update is exactly the three updates stacked. The adapter's scale ``alpha / rank`` is multiplied into
    the up weights and no ``alpha`` is written: ComfyUI applies such a file at scale 1, and diffusers' FLUX.2
    converter (which takes no alpha keys) reads it with rank = alpha, scale 1 too."""
    import torch
    from safetensors.torch import load_file

    from hubtools.families.lora_files import adapter_alphas

    state = load_file(str(diffusers_file))
    prefix = "transformer."
    modules = {key[len(prefix): -len(".lora_A.weight")] for key in state
               if key.startswith(prefix) and key.endswith(".lora_A.weight")}
    numbered = lambda stem: sorted({int(m.split(".")[1]) for m in modules if m.startswith(stem)})  # noqa: E731
    layout = _bfl_modules(numbered("transformer_blocks."), numbered("single_transformer_blocks."))
    alpha = adapter_alphas(diffusers_file).get("transformer")
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, members in layout.items():
        present = [m for m in members if m in modules]
        if not present:
            continue
        if len(present) != len(members):
            raise ValueError(f"the LoRA adapts only part of the fused module {name}: {', '.join(present)}")
        downs = [state[f"{prefix}{m}.lora_A.weight"] for m in members]
        ups = [state[f"{prefix}{m}.lora_B.weight"] for m in members]
        rank = downs[0].shape[0]
        scale = (alpha if alpha is not None else rank) / rank
        out[f"diffusion_model.{name}.lora_A.weight"] = torch.cat(downs).contiguous()
        out[f"diffusion_model.{name}.lora_B.weight"] = (torch.block_diag(*ups) * scale).contiguous()
        used.update(members)
    left = sorted(modules - used)
    if left or any(not key.startswith(prefix) for key in state):
        raise ValueError(f"no FLUX.2 (BFL) name for the LoRA modules {', '.join(left[:3]) or 'outside the transformer'}")
    return out


# -- the real shapes (benchmarks/flux2_configs.json) ------------------------------------------------------------

def real_shape_models(configs: dict[str, Any], variant: str) -> dict[str, Any]:
    """Random-weight models of FLUX.2's real shapes (``variant``: dev, 4b or 9b) on the current default device and
    dtype: under ``torch.device("meta")`` they cost nothing and count parameters."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM

    shapes = configs[variant]
    if variant == "dev":
        text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(**shapes["text_encoder"]))
    else:
        text_encoder = Qwen3ForCausalLM(Qwen3Config(**shapes["text_encoder"]))
    return {"transformer": Flux2Transformer2DModel(**shapes["transformer"]),
            "vae": AutoencoderKLFlux2(**configs["vae"]), "text_encoder": text_encoder}


# -- the tiny model's Mistral-style tokenizer ------------------------------------------------------------------

_MISTRAL_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                           "[IMG]", "[IMG_BREAK]", "[IMG_END]", "<pad>")
# Mistral Small 3.1's chat markup for system and user turns, reading text parts of list contents as the
# pipeline writes them ({"type": "text", "text": ...}).
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join('') %}{%- endif %}"
    "{%- if message['role'] == 'system' %}{{ '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{ '[INST]' + text + '[/INST]' }}"
    "{%- else %}{{ text + eos_token }}{%- endif %}{%- endfor %}"
)


def build_mistral_tokenizer():
    """A byte-level BPE tokenizer in Mistral's manner (every byte one token, Mistral's special tokens and chat
    markup), built in memory. The real model ships a ``PixtralProcessor`` (it needs torchvision); the pipeline
    only calls ``apply_chat_template``, which a tokenizer answers the same way."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hubtools.tokenizer import _bytes_to_unicode

    vocab = {token: index for index, token in enumerate(_MISTRAL_SPECIAL_TOKENS)}
    for symbol in _bytes_to_unicode().values():
        vocab[symbol] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(token, special=True) for token in _MISTRAL_SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", model_max_length=131072)
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer
