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
