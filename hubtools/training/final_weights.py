"""The weights a finished training leaves in the run folder: the LoRA file (and its kohya-layout twin), or the
whole pipeline in diffusers layout. Both are written aside and renamed into place, so a crash never leaves a
loadable half-model; both return the entries ``train_result.json`` lists (path, sha256, bytes)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hubtools.atomic import replace_dir
from hubtools.hashing import sha256_file
from hubtools.runfolder import LORA_WEIGHTS_FILENAME, WeightFile


def save_final_lora(root: Path, family, adapted: dict[str, Any], *, kohya_name: str | None = None) -> list[WeightFile]:
    """``pytorch_lora_weights.safetensors`` of the adapted components (the denoiser, and the text encoders
    that were trained), for ``load_lora_weights``; and, where the family has diffusers' converter, the same
    LoRA in the kohya layout as ``<kohya_name>.safetensors`` for AUTOMATIC1111 / ComfyUI / SD.Next (their
    prompt syntax ``<lora:NAME:1>`` takes the file's name, so it is named after the model, not generically)."""
    from safetensors.torch import save_file

    from hubtools.training.lora import save_lora

    written = [root / LORA_WEIGHTS_FILENAME]
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-lora-") as tmp:
        saved = save_lora(Path(tmp), family, adapted)
        if family.kohya_lora and kohya_name:
            kohya = Path(tmp) / kohya_lora_filename(kohya_name)
            save_file(family.kohya_lora_state(saved), kohya, metadata={"format": "pt"})
            os.replace(kohya, root / kohya.name)
            written.append(root / kohya.name)
        os.replace(saved, root / LORA_WEIGHTS_FILENAME)
    return [_file_entry(root, path) for path in written]


def kohya_lora_filename(name: str) -> str:
    """``<name>.safetensors`` with ``name`` reduced to characters every UI and file system takes."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "lora"
    if cleaned + ".safetensors" == LORA_WEIGHTS_FILENAME:
        cleaned += "-kohya"
    return cleaned + ".safetensors"


def save_final_pipeline(root: Path, family, pipe, trained: dict[str, Any]) -> list[WeightFile]:
    """The whole pipeline of the family's class, fp32 as the base was, the ``trained`` components in place of
    the base's; each component folder is swapped in by rename and model_index.json comes last, so the folder
    only reads as a model once every part is in place."""
    final = family.final_pipeline(pipe.components, trained)
    (root / "model_index.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-model-") as tmp:
        final.save_pretrained(tmp, safe_serialization=True)
        for item in sorted(Path(tmp).iterdir()):
            if item.name == "model_index.json":
                continue
            replace_dir(item, root / item.name)
        os.replace(Path(tmp) / "model_index.json", root / "model_index.json")
    weighted = {family.denoiser, "vae", *family.text_encoders}
    return [_file_entry(root, p) for p in sorted(root.glob("*/*.safetensors")) if p.parent.name in weighted]


def _file_entry(root: Path, path: Path) -> WeightFile:
    return WeightFile(path=path.relative_to(root).as_posix(), sha256=sha256_file(path), bytes=path.stat().st_size)
