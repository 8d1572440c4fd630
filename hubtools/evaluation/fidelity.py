"""Subject fidelity while training: DINO similarity of the validation images to the concept photos.

The light version of ``hubtools eval``: the paper's DINO metric on the few images the validation step
draws anyway, so ``logs/fidelity.jsonl`` and the loss-curve plot show the subject being learnt (and
overfitting: fidelity that keeps rising while the pictures turn into copies of the photos).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from hubtools.evaluation.encoders import ImageEmbedder, load_dino
from hubtools.evaluation.metrics import mean_pairwise_similarity
from hubtools.evaluation.evaluate import load_real_images


@dataclass
class FidelityProbe:
    encoder: ImageEmbedder
    real: torch.Tensor  # embeddings of the concept photos, computed once

    @classmethod
    def for_run(cls, run_dir: Path, *, model_id: str, device: torch.device | str,
                token: str | None = None) -> FidelityProbe:
        encoder = load_dino(model_id, device, token=token)
        return cls(encoder=encoder, real=encoder.embed_images(load_real_images(run_dir)))

    def score(self, images: Sequence[Image.Image]) -> float:
        """DINO: mean cosine similarity of every (image, concept photo) pair."""
        return mean_pairwise_similarity(self.encoder.embed_images(images), self.real)
