"""The image and text encoders the metrics are computed with, loaded from the Hub and kept in memory.

DINO (``facebook/dino-vits16``): a ``ViTModel``; the embedding is the CLS token of the last layer, as in
the DreamBooth paper. CLIP (``openai/clip-vit-base-patch32``): ``CLIPModel`` projected image and text
embeddings. Both come through ``from_pretrained`` (so the Hub cache and ``HF_ENDPOINT`` apply) and any
model id or local folder of the same architecture works.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import torch
from PIL import Image

from hubtools.config import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL
from hubtools import errors
from hubtools.errors import ConfigError
from hubtools.hub_errors import hub_error

DEFAULT_BATCH_SIZE = 16


class ImageEmbedder(Protocol):
    model_id: str

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor: ...


class TextImageEmbedder(ImageEmbedder, Protocol):
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


@dataclass
class DinoEncoder:
    """CLS-token embeddings of a ViT (DINO) model."""

    model_id: str
    model: Any  # transformers.ViTModel
    processor: Any  # an image processor
    device: torch.device
    batch_size: int = DEFAULT_BATCH_SIZE

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        chunks = []
        for batch in _batches(_rgb(images), self.batch_size):
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device, self._dtype)
            chunks.append(self.model(pixel_values=pixels).last_hidden_state[:, 0].float().cpu())
        return _concat(chunks)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


@dataclass
class ClipEncoder:
    """Projected image and text embeddings of a CLIP model."""

    model_id: str
    model: Any  # transformers.CLIPModel
    processor: Any  # an image processor
    tokenizer: Any
    device: torch.device
    batch_size: int = DEFAULT_BATCH_SIZE

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        chunks = []
        dtype = next(self.model.parameters()).dtype
        for batch in _batches(_rgb(images), self.batch_size):
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device, dtype)
            chunks.append(_pooled(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        return _concat(chunks)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        # CLIP's text tower has 77 positions: longer prompts are cut, as CLIP itself would see them.
        max_length = min(getattr(self.tokenizer, "model_max_length", 77) or 77,
                         self.model.config.text_config.max_position_embeddings)
        for batch in _batches(list(texts), self.batch_size):
            tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            tokens = {key: value.to(self.device) for key, value in tokens.items() if key in ("input_ids", "attention_mask")}
            chunks.append(_pooled(self.model.get_text_features(**tokens)).float().cpu())
        return _concat(chunks)


@dataclass
class Encoders:
    dino: ImageEmbedder
    clip: TextImageEmbedder


def load_encoders(dino_model: str = DEFAULT_DINO_MODEL, clip_model: str = DEFAULT_CLIP_MODEL,
                  device: torch.device | str = "cpu", token: str | None = None) -> Encoders:
    return Encoders(dino=load_dino(dino_model, device, token=token), clip=load_clip(clip_model, device, token=token))


def load_dino(model_id: str = DEFAULT_DINO_MODEL, device: torch.device | str = "cpu",
              token: str | None = None) -> DinoEncoder:
    """A DINO encoder, loaded once per (id, device) for the life of the process."""
    return _load_dino(model_id, str(torch.device(device)), token)


def load_clip(model_id: str = DEFAULT_CLIP_MODEL, device: torch.device | str = "cpu",
              token: str | None = None) -> ClipEncoder:
    """A CLIP encoder, loaded once per (id, device) for the life of the process."""
    return _load_clip(model_id, str(torch.device(device)), token)





@lru_cache(maxsize=4)
def _load_dino(model_id: str, device: str, token: str | None) -> DinoEncoder:
    from transformers import AutoImageProcessor, ViTModel

    with _EncoderLoadErrors("DINO", model_id, "--dino-model"):
        model = ViTModel.from_pretrained(model_id, add_pooling_layer=False, token=token)
        processor = AutoImageProcessor.from_pretrained(model_id, token=token)
    return DinoEncoder(model_id=model_id, model=model.eval().to(device), processor=processor, device=torch.device(device))


@lru_cache(maxsize=4)
def _load_clip(model_id: str, device: str, token: str | None) -> ClipEncoder:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    with _EncoderLoadErrors("CLIP", model_id, "--clip-model"):
        model = CLIPModel.from_pretrained(model_id, token=token)
        processor = AutoImageProcessor.from_pretrained(model_id, token=token)
        tokenizer = AutoTokenizer.from_pretrained(model_id, token=token)
    return ClipEncoder(model_id=model_id, model=model.eval().to(device), processor=processor,
                       tokenizer=tokenizer, device=torch.device(device))


class _EncoderLoadErrors:
    """Turn from_pretrained's many failure types into one line the user can act on."""

    def __init__(self, kind: str, model_id: str, flag: str) -> None:
        self.kind, self.model_id, self.flag = kind, model_id, flag

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, error, traceback) -> bool:
        if error is None:
            return False
        from huggingface_hub import constants

        logging.getLogger("hubtools").debug("loading %s encoder %s failed", self.kind, self.model_id, exc_info=error)
        translated = hub_error(error, f"{self.kind} encoder {self.model_id}", missing=ConfigError,
                               not_found_hint=f"check the id or pass another with {self.flag}")
        if translated is not None:
            raise translated from None
        first_line = errors.first_line(error)
        if isinstance(error, (OSError, ValueError, KeyError, TypeError)):
            raise ConfigError(
                f"{self.kind} encoder {self.model_id} could not be loaded ({first_line}): pass a model id or folder "
                f"of the right architecture with {self.flag}, or check the connection to {constants.ENDPOINT}"
            ) from None
        return False


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected embedding; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    return [image if image.mode == "RGB" else image.convert("RGB") for image in images]


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _concat(chunks: list[torch.Tensor]) -> torch.Tensor:
    if not chunks:
        raise ValueError("no images or texts to embed")
    return torch.cat(chunks)
