"""The weights a finished training leaves in the run folder: the LoRA file, or the whole pipeline in
diffusers layout. Both are written aside and renamed into place, so a crash never leaves a loadable
half-model; both return the entries ``train_result.json`` lists (path, sha256, bytes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
import torch

from hubtools.atomic import replace_dir
from hubtools.hashing import sha256_file
from hubtools.runfolder import LORA_WEIGHTS_FILENAME, WeightFile


def save_final_lora(root: Path, unet, text_encoder) -> list[WeightFile]:
    """``pytorch_lora_weights.safetensors``; ``text_encoder`` None when only the UNet was adapted."""
    from hubtools.training.lora import save_lora

    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-lora-") as tmp:
        saved = save_lora(Path(tmp), unet, text_encoder)
        os.replace(saved, root / LORA_WEIGHTS_FILENAME)
    return [_file_entry(root, root / LORA_WEIGHTS_FILENAME)]


def save_final_pipeline(root: Path, pipe, unet, text_encoder) -> list[WeightFile]:
    """The whole pipeline, fp32 as the base was; each component folder is swapped in by rename and
    model_index.json comes last, so the folder only reads as a model once every part is in place."""
    from diffusers import StableDiffusionPipeline

    final = StableDiffusionPipeline(
        unet=unet, vae=pipe.vae.to(torch.float32), text_encoder=text_encoder.to(torch.float32),
        tokenizer=pipe.tokenizer, scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    (root / "model_index.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-model-") as tmp:
        final.save_pretrained(tmp, safe_serialization=True)
        for item in sorted(Path(tmp).iterdir()):
            if item.name == "model_index.json":
                continue
            replace_dir(item, root / item.name)
        os.replace(Path(tmp) / "model_index.json", root / "model_index.json")
    return [_file_entry(root, p) for p in sorted(root.glob("*/*.safetensors"))
            if p.parent.name in ("unet", "vae", "text_encoder")]


def _file_entry(root: Path, path: Path) -> WeightFile:
    return WeightFile(path=path.relative_to(root).as_posix(), sha256=sha256_file(path), bytes=path.stat().st_size)
