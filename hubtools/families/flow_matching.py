"""What the flow-matching families (FLUX.1, SD 3.5, Qwen-Image, Z-Image) share: the flow-matching Euler
scheduler for training, validation and the grids, and LoRA as the default method (a full fine-tune of their
real models needs far more memory than one GPU has)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hubtools.families.base import Family, NoisyBatch, unwrapped

if TYPE_CHECKING:  # importing a family imports no torch
    import torch

TINY_RESOLUTION = 64
# Below this many denoiser parameters (the tiny models) a full fine-tune is allowed anywhere, CPU included.
ALWAYS_FULL_BELOW = 100_000_000


class FlowMatchingFamily(Family):
    """A family trained and sampled with ``FlowMatchEulerDiscreteScheduler``; ``training_shift`` overrides the
    scheduler config's shift during training where the family's script does (None: the config's own)."""

    training_shift: ClassVar[float | None] = None

    def check_training(self, method: str, denoiser, device: torch.device, shards: int = 1) -> None:
        """LoRA trains anywhere; a full fine-tune of a real model (16 bytes a parameter: weights, gradients and
        AdamW states) is refused unless the GPU has room for it, or ``shards`` GPUs under FSDP do."""
        from hubtools.families.fits import check_full_fine_tune

        if method != "full":
            return
        parameters = sum(p.numel() for p in unwrapped(denoiser).parameters())
        if parameters < ALWAYS_FULL_BELOW:
            return
        check_full_fine_tune(self.title, parameters, device, shards)

    def config_defaults(self, denoiser_config: dict[str, Any]) -> dict[str, Any]:
        return {**super().config_defaults(denoiser_config), "training.method": "lora"}

    def sampling_scheduler(self, name: str, scheduler_config):
        """The flow-matching Euler scheduler the model was trained for, whatever the name."""
        return self.validation_scheduler(scheduler_config)

    def sampling_scheduler_label(self, name: str) -> str:
        return "flow-matching Euler"

    def validation_scheduler(self, scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)

    def training_scheduler(self, scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        shift = {} if self.training_shift is None else {"shift": self.training_shift}
        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config, **shift)


def logit_normal_noisy_batch(scheduler, latents: torch.Tensor, generator: torch.Generator, device: torch.device,
                             weighting_scheme: str, target: torch.Tensor | None = None) -> NoisyBatch:
    """The step of diffusers' SD3-style scripts (SD 3.5, Qwen-Image): times ``u`` from
    ``compute_density_for_timestep_sampling`` (logit-normal mean 0, std 1, mode scale 1.29), index ``u * 1000``
    into the scheduler's shifted timesteps and sigmas, ``x_t = (1 - sigma) x_0 + sigma noise``; the target is
    ``noise - x_0`` unless ``target`` (given as ``latents`` for preconditioned outputs) says otherwise. Noise
    first, then ``u``, both from ``generator`` (exact resume depends on that order)."""
    import torch
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

    noise = torch.randn(latents.shape, generator=generator).to(device)
    u = compute_density_for_timestep_sampling(weighting_scheme, latents.shape[0], logit_mean=0.0, logit_std=1.0,
                                              mode_scale=1.29, generator=generator)
    indices = (u * scheduler.config.num_train_timesteps).long()
    timesteps = scheduler.timesteps[indices].to(device)
    sigmas = scheduler.sigmas[indices].to(device=device, dtype=latents.dtype)
    expanded = sigmas.view(-1, 1, 1, 1)
    noisy = (1.0 - expanded) * latents + expanded * noise
    weights = compute_loss_weighting_for_sd3(weighting_scheme, sigmas).float()
    return NoisyBatch(noisy, timesteps, noise - latents if target is None else target, weights)


def tiny_flow_matching_vae(*, shift_factor: float, scaling_factor: float):
    """The tiny models' 16-channel, 8x VAE (64 px in, 8x8 latents out) with the family's latent shift and scale;
    call it inside the builder's seeded RNG, where the VAE's weights are drawn."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
        latent_channels=16, norm_num_groups=8, sample_size=TINY_RESOLUTION,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=shift_factor, scaling_factor=scaling_factor,
    )


def real_shapes_in_bf16(build_models, *args) -> dict[str, Any]:
    """``build_models(*args)`` (a family's real-shape builder) seeded and with bf16 as the default dtype, as the
    large families ship: the benchmark's full-size random pipeline then allocates half the memory of fp32."""
    import torch

    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return build_models(*args)
    finally:
        torch.set_default_dtype(before)
