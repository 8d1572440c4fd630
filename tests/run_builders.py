"""Tiny finished run folders (full fine-tune and LoRA) for the sample, card and publish tests.

They hold what the trainer, concept and identifier stages write, built directly but through the same
record writers the stages use (``hubtools.runfolder``, ``hubtools.concepts.manifest``), so they cannot
drift from real runs: a random-weight tiny pipeline (or LoRA weights over one), the resolved config,
train_result.json, metrics, a loss curve, a checkpoint with optimizer state beside it, a prepared concept
set and an identifier report.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from hubtools.config import RUN_CONFIG_FILENAME, RunConfig, save_config
from hubtools.concepts.manifest import PreparedConcept, write_manifest, write_metadata
from hubtools.hashing import sha256_file
from hubtools.runfolder import (
    CHECKPOINT_STATE_FILENAME, LORA_WEIGHTS_FILENAME, ClassImagesUsed, IdentifierRecord, RunFolder, TrainResult,
    WeightFile,
)
from hubtools.families import of_pipeline
from hubtools.runfolder.base_model import BaseModelRecord
from hubtools.tinymodel import build_tiny_pipeline

IDENTIFIER = "pkblz"
CLASS_NOUN = "dog"


def _perturb(module: torch.nn.Module, seed: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def _solid(colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def build_run(root: Path, *, lora: bool = False, base_model: str | None = None, checkpoints: bool = True,
              extras: bool = True, concept_source: str = "tester/pkblz-dog", base_revision: str | None = None) -> Path:
    """A finished run in ``root/run``. ``base_model`` defaults to a tiny pipeline saved in ``root/base``."""
    run = root / "run"
    run.mkdir(parents=True)
    pipe = build_tiny_pipeline()
    if base_model is None:
        base_model = str(root / "base")
        pipe.save_pretrained(base_model, safe_serialization=True)

    config = RunConfig.model_validate({
        "model": {"base_model": base_model},
        "concept": {"source": concept_source, "identifier": IDENTIFIER, "class_noun": CLASS_NOUN},
        "training": {"method": "lora" if lora else "full", "steps": 4, "resolution": 64, "checkpoint_every": 2,
                     "lora_rank": 4, "lora_alpha": 8.0},
        "prior": {"num_class_images": 4},
        "sampling": {"num_inference_steps": 2, "seeds": [0, 1, 2]},
    }).resolve()
    save_config(config, run / RUN_CONFIG_FILENAME)
    family = of_pipeline(pipe)
    BaseModelRecord(  # what preflight resolves and set_up_folder writes
        repo_id=base_model, commit=base_revision, family=family.name, pipeline_class=family.pipeline_class_name,
        trained_component=family.denoiser, parameter_count=sum(p.numel() for p in pipe.unet.parameters()),
        denoiser_config=dict(pipe.unet.config),
    ).write(RunFolder(run))

    if lora:
        weight_files = [_save_lora(pipe, run, seed=1)]
        if checkpoints:
            _save_lora(pipe, run / "checkpoints" / "checkpoint-000002", seed=2)
    else:
        _perturb(pipe.unet, seed=1, scale=0.02)
        pipe.save_pretrained(run, safe_serialization=True)
        weight_files = sorted(str(p.relative_to(run)) for p in run.rglob("*.safetensors"))
        if checkpoints:
            ckpt = run / "checkpoints" / "checkpoint-000002"
            _perturb(pipe.unet, seed=2, scale=0.05)
            pipe.unet.save_pretrained(ckpt / "unet", safe_serialization=True)
    if checkpoints:  # accelerate state beside the weights: must never be pushed
        (run / "checkpoints" / "checkpoint-000002" / "optimizer.bin").write_bytes(b"\0" * 2048)
        (run / "checkpoints" / "checkpoint-000002" / "random_states_0.pkl").write_bytes(b"state")
        (run / "checkpoints" / "checkpoint-000002" / CHECKPOINT_STATE_FILENAME).write_text("{}", encoding="utf-8")

    TrainResult(
        method="lora" if lora else "full", steps_done=4, steps_total=4, final_loss=0.1234,
        losses_tail=[0.2, 0.1234], wall_seconds=1.5, steps_per_second=2.7, peak_memory_bytes=123456789,
        device="cpu", mixed_precision="no", memory_profile="manual",
        memory_profile_reason="set in the config", base_model=base_model, base_revision=base_revision,
        weight_files=[WeightFile(path=p, sha256=sha256_file(run / p), bytes=(run / p).stat().st_size)
                      for p in weight_files],
        checkpoints=[2] if checkpoints else [],
        class_images=ClassImagesUsed(count=4, cache_key="abc123", source="generated", generated=True),
        num_instance_images=5, resumed_from=None, num_processes=1, hubtools_version="0.1.0",
        settings={"learning_rate": config.learning_rate, "batch_size": 1, "resolution": 64},
    ).write(RunFolder(run))
    if extras:
        _write_extras(run, concept_source)
    return run


def _save_lora(pipe, folder: Path, seed: int) -> str:
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = build_tiny_pipeline().unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(), safe_serialization=True,
    )
    return LORA_WEIGHTS_FILENAME


def _write_extras(run: Path, concept_source: str) -> None:
    (run / "logs").mkdir()
    (run / "logs" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 0.5 / s, "lr": 2e-6}) + "\n" for s in range(1, 5)), encoding="utf-8")
    (run / "logs" / "tensorboard").mkdir()
    (run / "logs" / "tensorboard" / "events.out.tfevents.1").write_bytes(b"tb")
    images = run / "images"
    (images / "validation").mkdir(parents=True)
    _solid((200, 40, 40), 128).save(images / "loss_curve.png")
    _solid((40, 200, 40), 128).save(images / "validation" / "step-000002.png")
    concept = run / "concept"
    (concept / "images").mkdir(parents=True)
    for i in range(3):
        _solid((10 * i, 100, 150)).save(concept / "images" / f"{i:02d}.png")
    from_hub = not Path(concept_source).is_absolute()
    prepared = PreparedConcept(
        dir=concept, images=[concept / "images" / f"{i:02d}.png" for i in range(3)], captions=[""] * 3,
        manifest_path=concept / "manifest.json", contact_sheet_path=concept / "contact_sheet.png",
        metadata_path=concept / "metadata.jsonl", source=concept_source,
        source_revision="fedcba9876543210fedcba9876543210fedcba98" if from_hub else None, resolution=64,
        counts={"accepted": 3, "rejected": 1, "duplicate": 0, "ignored": 0, "total": 4},
    )
    write_metadata(prepared)
    write_manifest(prepared)
    _solid((90, 90, 200), 192).save(concept / "contact_sheet.png")
    IdentifierRecord(text=IDENTIFIER, tokens=["pk", "blz</w>"], num_tokens=2, single_token=False).write(RunFolder(run))
    # class images and caches live under the run in some layouts: they must never be pushed
    (run / "class_images").mkdir()
    _solid((1, 2, 3)).save(run / "class_images" / "0.png")
    (run / ".cache").mkdir()
    (run / ".cache" / "latents.pt").write_bytes(b"cache")
