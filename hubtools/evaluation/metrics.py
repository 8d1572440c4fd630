"""The DreamBooth paper's metrics as plain tensor math over embeddings (no models, no images).

Every metric is a mean of cosine similarities (Ruiz et al. 2022, section 4.1):

- DINO / CLIP-I: generated images vs real subject images, all pairs, DINO ViT-S/16 or CLIP image embeddings.
- CLIP-T: each generated image vs the CLIP text embedding of the prompt that made it.
- PRES: class-prompt generations ("a dog") vs the real subject, DINO embeddings. High means the class
  noun has drifted toward the subject (language drift); lower is better.
- DIV: 1 - similarity between generations of the same prompt with different seeds, averaged over prompts.
  The paper uses LPIPS here; hubtools uses DINO embeddings so no extra network is needed (so the absolute
  value is not comparable with the paper's, only between models measured here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[i, j]`` = cosine similarity of ``a[i]`` and ``b[j]`` (rows are embeddings)."""
    _check_embeddings(a, "a")
    _check_embeddings(b, "b")
    return F.normalize(a.double(), dim=-1) @ F.normalize(b.double(), dim=-1).T


def mean_pairwise_similarity(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean cosine similarity over every (generated, reference) pair: DINO, CLIP-I and PRES."""
    return float(cosine_matrix(generated, reference).mean())


def mean_self_similarity(embeddings: torch.Tensor) -> float | None:
    """Mean cosine similarity over distinct pairs of one set (the diagonal left out); None below 2 rows."""
    n = embeddings.shape[0]
    if n < 2:
        return None
    similarity = cosine_matrix(embeddings, embeddings)
    off_diagonal = similarity.sum() - similarity.diagonal().sum()
    return float(off_diagonal / (n * (n - 1)))


def mean_paired_similarity(images: torch.Tensor, texts: torch.Tensor) -> float:
    """Mean cosine similarity of row i of ``images`` with row i of ``texts``: CLIP-T."""
    if images.shape != texts.shape:
        raise ValueError(f"paired embeddings need equal shapes, got {tuple(images.shape)} and {tuple(texts.shape)}")
    _check_embeddings(images, "images")
    return float(F.cosine_similarity(images.double(), texts.double(), dim=-1).mean())


def diversity(groups: Sequence[torch.Tensor]) -> float | None:
    """Mean over groups (one per prompt) of 1 - mean pairwise similarity within the group.

    Groups with fewer than two images say nothing about diversity and are skipped; None if all are.
    """
    per_group = [similarity for group in groups if (similarity := mean_self_similarity(group)) is not None]
    if not per_group:
        return None
    return 1.0 - sum(per_group) / len(per_group)


def _check_embeddings(x: torch.Tensor, name: str) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] embedding matrix, got shape {tuple(x.shape)}")
