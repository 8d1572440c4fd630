"""The DreamBooth objective: noise-prediction MSE on the instance half plus a weighted prior half.

A batch is ``[instance examples..., class examples...]`` (the class half is absent without prior
preservation). The per-example MSE is optionally min-SNR weighted; the two halves are averaged separately
so ``prior_loss_weight`` means exactly what the paper means by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    loss: torch.Tensor  # what is back-propagated: instance + weight * prior
    instance_loss: torch.Tensor
    prior_loss: torch.Tensor | None


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
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps).float()
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr.clamp(min=1e-8)


def dreambooth_loss(model_pred: torch.Tensor, target: torch.Tensor, *, num_instance: int,
                    prior_loss_weight: float = 1.0, weights: torch.Tensor | None = None) -> LossParts:
    """Split the batch after ``num_instance`` examples; the rest are class (prior) examples."""
    per_example = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if weights is not None:
        per_example = per_example * weights
    instance_loss = per_example[:num_instance].mean()
    if per_example.shape[0] == num_instance:
        return LossParts(loss=instance_loss, instance_loss=instance_loss, prior_loss=None)
    prior_loss = per_example[num_instance:].mean()
    return LossParts(loss=instance_loss + prior_loss_weight * prior_loss, instance_loss=instance_loss,
                     prior_loss=prior_loss)
