"""What a model family answers: the one interface the training loop, sampling, the card and publishing call.

A family is everything that differs between Stable Diffusion 1.x/2.x, SDXL and FLUX.1 for DreamBooth:
which parts the pipeline has, how captions become conditioning, how images become latents, the noise,
timesteps and target of a training step, the model call, LoRA targets, the pipeline that samples, the final
save, and the card's snippet and sampling defaults. Families are stateless singletons; what a method needs
from a loaded model it is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SamplingDefaults:
    """What a family's pipeline draws well with: grids, the widget and the card's snippet start here."""

    guidance_scale: float
    num_inference_steps: int
    guidance_scales: tuple[float, ...]  # the guidance sweep
    extra: dict[str, Any] = field(default_factory=dict)  # further pipeline-call arguments (FLUX: max_sequence_length)


@dataclass(frozen=True)
class MemoryProfile:
    """A named bundle of the settings that trade speed for GPU memory (``--memory low|medium|high|auto``)."""

    name: str
    min_free_gib: float  # the free GPU memory this profile is meant for (the family's default resolution)
    method: str
    use_8bit_adam: bool
    gradient_checkpointing: bool
    summary: str


def lora_profiles(high_gib: float, medium_gib: float, low_gib: float,
                  low_ending: str = " (lower --resolution below this)") -> tuple[MemoryProfile, ...]:
    """The three LoRA profiles of a family too large to fine-tune whole on one GPU, for the free GiB each needs;
    ``low_ending`` ends the low profile's summary."""
    return (
        MemoryProfile("high", high_gib, "lora", False, False, "LoRA, AdamW, no checkpointing (fastest)"),
        MemoryProfile("medium", medium_gib, "lora", True, True, "LoRA, 8-bit Adam, gradient checkpointing"),
        MemoryProfile("low", low_gib, "lora", True, True, f"LoRA, 8-bit Adam, gradient checkpointing{low_ending}"),
    )


@dataclass(frozen=True)
class License:
    """The licence a fine-tune inherits, in the Hub's card metadata terms."""

    id: str  # the Hub's licence id ("other" for a licence the Hub does not list)
    name: str | None = None  # license_name, with id "other"
    link: str | None = None  # license_link, with id "other"
    note: str | None = None  # one line the card states (e.g. non-commercial terms)


@dataclass
class Conditioning:
    """The text conditioning of a batch of captions: tensors whose first dimension is the caption."""

    tensors: dict[str, torch.Tensor]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def rows(self, rows: list[int]) -> Conditioning:
        return Conditioning({name: value[rows] for name, value in self.tensors.items()})

    def to(self, dtype: torch.dtype) -> Conditioning:
        return Conditioning({name: value.to(dtype) for name, value in self.tensors.items()})


@dataclass
class NoisyBatch:
    """One training step's denoiser input and what it should predict."""

    model_input: torch.Tensor  # the noised latents, in the latents' (B, C, H, W) layout
    timesteps: torch.Tensor  # what the denoiser is called with (per family: DDPM step or flow-matching time)
    target: torch.Tensor  # in the latents' layout
    weights: torch.Tensor | None  # per-example loss weights, or None for a plain mean


class Family(ABC):
    """One model family. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]  # "sd", "sdxl", "flux": what configs, results and the CLI say
    title: ClassVar[str]  # for people: "Stable Diffusion 1.x/2.x"
    pipeline_class_name: ClassVar[str]  # diffusers' pipeline class (model_index.json's _class_name)
    denoiser: ClassVar[str]  # the component trained: "unet" or "transformer"
    text_encoders: ClassVar[tuple[str, ...]]  # pipeline components, in the order they encode
    tokenizers: ClassVar[tuple[str, ...]]  # pipeline components, one per text encoder
    # Whether the first tokenizer is CLIP's BPE (hubtools' offline identifier check reads it for every family)
    first_tokenizer_is_clip: ClassVar[bool] = True
    trainable_text_encoders: ClassVar[tuple[str, ...]]  # the text encoders that may train (full or LoRA)
    denoiser_lora_targets: ClassVar[tuple[str, ...]]
    text_encoder_lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")
    tiny_repo_id: ClassVar[str]  # the tiny random model on the (local) Hub
    default_resolution: ClassVar[int]
    card_dtype: ClassVar[str]  # the torch dtype the card's snippet loads with
    # Every family here has an 8x VAE (FLUX then packs 2x2 latent patches into tokens).
    vae_scale_factor: ClassVar[int] = 8
    # Latent pixels per token side of the denoiser (FLUX packs 2x2 latent patches into one token).
    patch_size: ClassVar[int] = 1
    # Forward FLOPs of the trained component per parameter and latent pixel, for the plan's time estimate
    # (``hubtools/estimate.py``); None: a transformer's 2 FLOPs a parameter and token (``2 / patch_size**2``).
    forward_flops_per_parameter_and_pixel: ClassVar[float | None] = None
    # Component keyword arguments the pipeline needs beyond its parts (SD: no safety checker).
    extra_pipeline_kwargs: ClassVar[dict[str, Any]] = {}
    # The family's memory profiles, largest first (``training/memory.py`` picks one; benchmarks/ measures them):
    # ``MemoryProfile``s, or their fields as tuples.
    memory_profiles: ClassVar[tuple[MemoryProfile | tuple, ...]]

    def variant(self, denoiser_config: dict[str, Any]) -> str:
        """The variant of this family a denoiser config belongs to (e.g. dev or schnell); '' when it has none."""
        return ""

    @property
    def size_multiple(self) -> int:
        """What every side of a training image must be a multiple of: the VAE factor times the patch size."""
        return self.vae_scale_factor * self.patch_size

    # -- the pipeline --------------------------------------------------------------------------------------

    def pipeline_class(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def components(self) -> tuple[str, ...]:
        """The parts training needs."""
        return (self.denoiser, "vae", *self.text_encoders, *self.tokenizers, "scheduler")

    def pipeline(self, parts: dict[str, Any], scheduler=None):
        """A pipeline of this family's class from ``parts`` (a pipeline's ``components``), with ``scheduler``
        in place of the one in ``parts`` when given."""
        parts = {name: parts[name] for name in self.components()}
        if scheduler is not None:
            parts["scheduler"] = scheduler
        return self.pipeline_class()(**parts, **self.extra_pipeline_kwargs)

    def validation_scheduler(self, scheduler_config):
        """The scheduler validation grids draw with (clean at few steps)."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(scheduler_config, clip_sample=False)

    def training_scheduler(self, scheduler_config):
        """The noise scheduler training draws timesteps and noise levels from."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(scheduler_config)

    @abstractmethod
    def sampling_defaults(self, denoiser_config: dict[str, Any]) -> SamplingDefaults:
        """Guidance, steps and call arguments this family (and variant) samples well with."""

    def config_defaults(self, denoiser_config: dict[str, Any]) -> dict[str, Any]:
        """Run settings (dotted ``section.key``) whose defaults differ for this family: applied to a config only
        where the user left them unset (``families.apply_family_defaults``). SD's are the config's own."""
        defaults = self.sampling_defaults(denoiser_config)
        return {"training.resolution": self.default_resolution,
                "sampling.guidance_scales": list(defaults.guidance_scales),
                "sampling.num_inference_steps": defaults.num_inference_steps,
                "prior.guidance_scale": defaults.guidance_scale,
                "prior.generation_steps": min(defaults.num_inference_steps, 30)}

    _SAMPLING_SCHEDULERS: ClassVar[dict[str, str]] = {
        "ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "euler": "EulerDiscreteScheduler",
        "dpm": "DPMSolverMultistepScheduler",
    }

    def sampling_scheduler(self, name: str, scheduler_config):
        """The scheduler the sample grids draw with, by the config's name (ddim, pndm, euler, dpm)."""
        import diffusers

        return getattr(diffusers, self._SAMPLING_SCHEDULERS[name]).from_config(scheduler_config)

    def sampling_scheduler_label(self, name: str) -> str:
        return name.upper()

    def card_snippet(self, denoiser_config: dict[str, Any], scheduler_name: str,
                     resolution: int | None = None) -> dict[str, Any]:
        """What the card's code snippet needs: the pipeline class, the half-precision dtype it loads with on a
        GPU, the scheduler class it swaps in (None: keep the model's own), extra call arguments as Python
        (the image size where the pipeline's default is not the model's: FLUX always draws 1024 px)."""
        extra = self.call_kwargs(denoiser_config)
        if resolution and not self.pipeline_sizes_itself:
            extra = {"height": resolution, "width": resolution, **extra}
        return {"pipeline_class": self.pipeline_class_name, "dtype": self.card_dtype,
                "guidance_arg": next(iter(self.guidance_kwargs(0.0))),
                "scheduler_class": self._SAMPLING_SCHEDULERS[scheduler_name] if self.swaps_scheduler else None,
                "call_args": "".join(f", {key}={value!r}" for key, value in extra.items())}

    # Whether sampling swaps in the config's scheduler (SD, SDXL) or keeps the model's own (FLUX).
    swaps_scheduler: ClassVar[bool] = True
    # Whether the pipeline's default image size follows the model's config (SD, SDXL: the UNet's sample size).
    pipeline_sizes_itself: ClassVar[bool] = True

    def guidance_kwargs(self, guidance: float) -> dict[str, Any]:
        """The pipeline-call argument a guidance value goes in (Qwen-Image: ``true_cfg_scale``)."""
        return {"guidance_scale": guidance}

    def call_kwargs(self, denoiser_config: dict[str, Any]) -> dict[str, Any]:
        """Pipeline-call arguments beyond prompt, steps, guidance, size and generator."""
        return dict(self.sampling_defaults(denoiser_config).extra)

    @abstractmethod
    def default_license(self, denoiser_config: dict[str, Any]) -> License:
        """The licence of this family's (and variant's) official weights, when the base card names none."""

    # -- training ------------------------------------------------------------------------------------------

    @abstractmethod
    def tokenize(self, parts: dict[str, Any], captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """Token ids of ``captions`` for every tokenizer, keyed by text-encoder name."""

    @abstractmethod
    def encode_prompts(self, text_encoders: dict[str, Any], token_ids: dict[str, torch.Tensor]) -> Conditioning:
        """The text conditioning of tokenized captions (``text_encoders`` keyed by component name)."""

    def latent_distribution(self, vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE's latent distribution of ``pixels`` (B, 3, H, W in [-1, 1]), (B, C, h, w):
        training samples ``mean + std * noise``, then applies ``latent_scaling``."""
        dist = vae.encode(pixels).latent_dist
        return dist.mean, dist.std

    def latent_scaling(self, vae_config) -> tuple[float | None, float]:
        """(shift, scale): latents for the denoiser are ``(sample - shift) * scale``."""
        shift = getattr(vae_config, "shift_factor", None)
        return (None if shift is None else float(shift)), float(vae_config.scaling_factor)

    @abstractmethod
    def noisy_input_and_target(self, scheduler, latents: torch.Tensor, generator: torch.Generator, training,
                               device: torch.device) -> NoisyBatch:
        """Noise ``latents`` at random timesteps, every draw from ``generator`` (exact resume depends on it)."""

    def with_image_conditioning(self, conditioning: Conditioning, geometry: list, size: tuple[int, int]) -> Conditioning:
        """The conditioning of a batch plus what the family is told about each image's photo (``geometry``:
        ``concepts.buckets.ImageGeometry`` or None per example; ``size``: the batch's (width, height)). Only
        SDXL's micro-conditioning uses it."""
        return conditioning

    @abstractmethod
    def predict(self, denoiser, model_input: torch.Tensor, timesteps: torch.Tensor,
                conditioning: Conditioning) -> torch.Tensor:
        """The denoiser's prediction, in the latents' layout."""

    def use_fast_attention(self, denoiser) -> None:
        """Switch the denoiser to PyTorch's SDPA attention (flash / memory-efficient kernels)."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        denoiser.set_attn_processor(AttnProcessor2_0())

    def check_method(self, method: str) -> None:
        """Raise ``ConfigError`` when this family never trains ``method`` ("full" or "lora"), whatever the machine:
        called by the preflight, before anything is loaded (default: both)."""

    def check_training(self, method: str, denoiser, device: torch.device, shards: int = 1) -> None:
        """Raise ``ConfigError`` when this family cannot train ``method`` here, on ``shards`` GPUs under FSDP
        (default: it always can)."""

    # -- saving --------------------------------------------------------------------------------------------

    def save_lora(self, folder: Path, weight_name: str, adapted: dict[str, Any]) -> Path:
        """The diffusers LoRA file of the adapted components (denoiser first), with each adapter's metadata
        (alpha != rank is otherwise lost on reload)."""
        from peft.utils import get_peft_model_state_dict

        layers: dict[str, Any] = {}
        for name, model in adapted.items():
            if model is not None and getattr(model, "peft_config", None):
                layers[f"{name}_lora_layers"] = get_peft_model_state_dict(model)
                # sets (target_modules) sorted: the file's bytes must not depend on the process's hash seed
                layers[f"{name}_lora_adapter_metadata"] = {
                    key: sorted(value) if isinstance(value, (set, frozenset)) else value
                    for key, value in model.peft_config["default"].to_dict().items()}
        self.pipeline_class().save_lora_weights(folder, weight_name=weight_name, safe_serialization=True, **layers)
        sort_safetensors_metadata(Path(folder) / weight_name)
        return Path(folder) / weight_name

    # Whether a second LoRA file, in the key layout other tools read, is written beside the diffusers one; the
    # card names its layout and the tools that read it.
    kohya_lora: ClassVar[bool] = True
    kohya_lora_layout: ClassVar[str] = "kohya's layout (`lora_unet_*`, `lora_te*_*`)"
    kohya_lora_readers: ClassVar[str] = "AUTOMATIC1111, ComfyUI, SD.Next and InvokeAI"

    def kohya_lora_state(self, diffusers_file: Path) -> dict[str, torch.Tensor]:
        """The LoRA of ``diffusers_file`` in the kohya layout that AUTOMATIC1111, ComfyUI, SD.Next and
        InvokeAI read (``lora_unet_*``, ``lora_te1_*``, ``lora_te2_*``; ``lora_down``/``lora_up``/``alpha``),
        through diffusers' converters. Each module's ``alpha`` is the adapter's own (the converter assumes
        alpha = rank)."""
        import torch
        import json

        from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(diffusers_file), "pt") as handle:
            metadata = json.loads((handle.metadata() or {}).get("lora_adapter_metadata", "{}"))
        kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(load_file(diffusers_file)))
        prefixes = {"lora_unet": self.denoiser, "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}
        for key in [k for k in kohya if k.endswith(".alpha")]:
            component = prefixes[next(p for p in prefixes if key.startswith(p + "_"))]
            alpha = metadata.get(f"{component}.lora_alpha")
            if alpha is not None:
                kohya[key] = torch.tensor(float(alpha))
        return kohya

    def final_pipeline(self, base_parts: dict[str, Any], trained: dict[str, Any]):
        """The pipeline a finished full fine-tune saves: the base's parts, the trained ones in their place,
        every model in fp32 as the base was."""
        import torch
        parts = {name: base_parts[name] for name in self.components()}
        parts.update(trained)
        for name, part in parts.items():
            if isinstance(part, torch.nn.Module) and name not in trained:
                part.to(torch.float32)
        return self.pipeline(parts)

    # -- the tiny random model -----------------------------------------------------------------------------

    @abstractmethod
    def build_tiny_pipeline(self):
        """A deterministic random-weight pipeline of this family, 64 px, a few million parameters."""

    tiny_card_tags: ClassVar[tuple[str, ...]] = ()
    card_tag: ClassVar[str]

    def tiny_card(self) -> str:
        tags = "\n".join(f"- {tag}" for tag in (*self.tiny_card_tags, "hubtools", "tiny-random"))
        return (f"---\nlicense: apache-2.0\nlibrary_name: diffusers\npipeline_tag: text-to-image\ntags:\n{tags}\n---\n\n"
                f"# {self.tiny_repo_id.split('/')[-1]}\n\n"
                f"A {self.title}-shaped `{self.pipeline_class_name}` with **random weights** (a few million "
                "parameters, 64 px) and offline-built tokenizers. It draws noise: it exists so that hubtools' demo "
                "and tests run every code path of a real DreamBooth run in seconds on a CPU, with no download.\n")


def unwrapped(model):
    """The model inside a DDP wrapper (its ``config`` is not reachable through the wrapper)."""
    return getattr(model, "module", model)


def sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted, in place. safetensors writes the metadata from
    a hash map, so a file with two keys (diffusers' LoRA: format, lora_adapter_metadata) came out in either
    order, and the same weights in different bytes. The header keeps its length; the tensors are not touched."""
    import json
    import struct

    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        raw = handle.read(length)
        header = json.loads(raw)
        metadata = header.pop("__metadata__", None)
        if not metadata or len(metadata) < 2:
            return
        ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > length:  # another escaping than safetensors' own: leave the file as written
            return
        handle.seek(8)
        handle.write(text.ljust(length, b" "))
