"""DDPM training helpers of the families that train with a DDPM scheduler (noise, offset noise, the
epsilon or v-prediction target, min-SNR weights): numerics a family's ``noisy_input_and_target`` uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
              offset_noise: float = 0.0, offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy latents, the noise actually added). Offset noise shifts each channel's mean, which lets the
    model learn very dark and very bright images; ``offset`` is a (B, C, 1, 1) standard normal draw."""
    if offset_noise and offset is not None:
        noise = noise + offset_noise * offset
    return scheduler.add_noise(latents, noise, timesteps), noise


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction schedulers)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported scheduler prediction_type {kind!r} (expected epsilon or v_prediction)")


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR, or / (SNR + 1) for v-prediction."""
    import torch
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps).float()
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr.clamp(min=1e-8)
