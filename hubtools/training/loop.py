"""The training stage: ``train_dreambooth(cfg, run_dir)`` fine-tunes the base model on the prepared concept
set (full UNet or LoRA, with prior preservation) and leaves the model, checkpoints, logs and
``train_result.json`` in the run folder (see ``hubtools.runfolder``).

It runs unchanged under ``accelerate launch`` (DDP): every process trains on its own shard of each global
batch with its own noise; only the main process writes files. Every random draw of a step comes from a
generator seeded by (seed, step, process), so a resumed run ends with the same weights as an uninterrupted
one on CPU.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import hubtools
from hubtools.config import RunConfig, describe_precision
from hubtools.errors import ConfigError, HubtoolsError
from hubtools.models import LORA_WEIGHTS_FILENAME, load_base_model, resolve_device
from hubtools.runfolder import RunFolder, read_jsonl, write_json_atomic
from hubtools.training import checkpoints as ckpt
from hubtools.training.data import (
    LatentSource, PromptSource, concept_fingerprint, data_indices, load_instance_examples, load_pixels,
    step_generator,
)
from hubtools.training.loss import add_noise, dreambooth_loss, snr_weights, training_target
from hubtools.training.memory import MemoryChoice, apply_choice, choose_profile, out_of_memory_error
from hubtools.training.metrics import MetricsLog, plot_loss_curve
from hubtools.training.validation import render_validation_grid, validation_path

logger = logging.getLogger("hubtools")

LOG_EVERY = 10  # steps between host syncs (loss values, NaN check, progress-bar postfix, metrics rows)
LOSSES_TAIL = 10
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    method: str
    steps_done: int
    steps_total: int
    final_loss: float | None
    losses_tail: list[float]
    wall_seconds: float
    steps_per_second: float | None
    peak_memory_bytes: int | None
    device: str
    mixed_precision: str
    memory_profile: str
    memory_profile_reason: str
    base_model: str
    base_revision: str | None
    weight_files: list[dict[str, Any]]
    checkpoints: list[int]
    class_images: dict[str, Any] | None
    num_instance_images: int
    resumed_from: int | None
    num_processes: int = 1
    hubtools_version: str = hubtools.__version__
    settings: dict[str, Any] = field(default_factory=dict)  # what actually ran: lr, batch, 8-bit, checkpointing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it, else fp16; full precision on CPU."""
    if setting == "auto":
        if device.type != "cuda":
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if setting == "fp16" and device.type != "cuda":
        raise ConfigError("--mixed-precision fp16 needs a CUDA GPU: use bf16 or no on this device")
    return setting


@dataclass
class _Where:
    """How far a run got, for the out-of-memory message."""

    effective: RunConfig | None = None
    choice: MemoryChoice | None = None
    step: int | None = None  # None: still loading


def train_dreambooth(cfg: RunConfig, run_dir: Path, *, resume: bool = False, force: bool = False,
                     token: str | None = None, progress: bool = True) -> TrainResult:
    """Train the run in ``run_dir`` (config and concept set already there); ``resume`` continues from the
    newest checkpoint. Raises ``ConfigError`` when a resume's config changed, unless ``force``; a CUDA
    out-of-memory error becomes a ``HubtoolsError`` naming the next smaller memory profile."""
    where = _Where()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        return _train(cfg, Path(run_dir), resume=resume, force=force, token=token, progress=progress, where=where)
    except torch.OutOfMemoryError:
        if where.choice is None:
            raise
        raise out_of_memory_error(where.effective, where.choice, where.step) from None
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _train(cfg: RunConfig, run_dir: Path, *, resume: bool, force: bool, token: str | None, progress: bool,
           where: _Where) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    started = time.perf_counter()
    cfg = cfg.resolve()
    folder = RunFolder(Path(run_dir))
    wanted_device = resolve_device(cfg.training.device)
    mixed_precision = resolve_mixed_precision(cfg.training.mixed_precision, wanted_device)
    _forget_previous_accelerator()
    accelerator = Accelerator(
        cpu=wanted_device.type == "cpu", mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.training.gradient_accumulation_steps, log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(folder.logs), logging_dir=str(folder.logs / "tensorboard")),
    )
    main = accelerator.is_main_process
    device = accelerator.device
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)  # exact resume; costs nothing on CPU
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    instance = load_instance_examples(folder.concept, cfg.instance_prompt)
    fingerprint = concept_fingerprint(instance)
    comparable = {**ckpt.comparable_config(cfg), "concept images": fingerprint,
                  "num_processes": accelerator.num_processes}

    # -- resume or start over: decided before any model is loaded --------------------------------------
    if main:
        ckpt.remove_partial(folder.checkpoints)
    accelerator.wait_for_everyone()
    resume_from: tuple[int, Path] | None = None
    pinned_revision: str | None = None
    choice: MemoryChoice
    if resume:
        resume_from = ckpt.latest_checkpoint(folder.checkpoints)
        if resume_from is None:
            raise ConfigError(f"nothing to resume in {folder.root}: it has no checkpoints (train it again without "
                              "--resume, with --checkpoint-every N to make resumable runs)")
        state = ckpt.read_state(resume_from[1])
        changes = ckpt.config_changes(state["config"], comparable)
        if changes and not force:
            raise ConfigError(f"the config changed since {resume_from[1].name}: {'; '.join(changes)} "
                              "(restore it, or pass --force to resume with the new settings)")
        # auto picked from the free memory of that day: keep its pick; anything else follows the config
        choice = MemoryChoice(**state["memory_choice"]) if cfg.training.memory == "auto" else choose_profile(cfg, device)
        pinned_revision = state.get("base_revision")
    else:
        if ckpt.list_checkpoints(folder.checkpoints) and not force:
            raise ConfigError(f"{folder.root} already has checkpoints of an earlier training: continue it with "
                              "--resume, or pass --force to start over")
        if main and folder.checkpoints.exists():
            shutil.rmtree(folder.checkpoints)
        choice = choose_profile(cfg, device)
    effective = apply_choice(cfg, choice)
    where.effective, where.choice = effective, choice
    if pinned_revision and not effective.model.revision:
        effective.model.revision = pinned_revision  # the frozen parts must be the ones the checkpoint saw
    training = effective.training
    if main and progress:
        print(f"memory profile: {choice.profile} ({choice.reason})", file=sys.stderr)

    # -- models --------------------------------------------------------------------------------------
    from accelerate.utils import set_seed

    set_seed(cfg.training.seed)  # LoRA's initial weights come from the global RNG
    base = load_base_model(effective.model, device=device, dtype=torch.float32, token=token)
    pipe = base.pipeline
    missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if getattr(pipe, name, None) is None]
    if missing:
        raise ConfigError(f"base model {base.model_id} has no {', '.join(missing)}: use a Stable Diffusion 1.x "
                          "diffusers pipeline")
    class_images = None
    if effective.prior.enabled:  # before any adapter or cast: class images come from the untouched base
        from hubtools.prior import ensure_class_images

        with accelerator.main_process_first():
            class_images = ensure_class_images(effective, base, device=device, progress=progress and main)

    weight_dtype = _DTYPES[mixed_precision]
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    from diffusers import DDPMScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    vae.requires_grad_(False)
    vae.to(device, dtype=weight_dtype)
    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels)
    lora = training.method == "lora"
    train_text_encoder = training.train_text_encoder
    if lora:
        from hubtools.training.lora import add_lora_adapters

        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)
        unet.to(device, dtype=weight_dtype)
        text_encoder.to(device, dtype=weight_dtype)
        add_lora_adapters(unet, text_encoder, rank=training.lora_rank, alpha=training.lora_alpha,
                          train_text_encoder=train_text_encoder)
    else:
        unet.requires_grad_(True)  # trainable weights stay fp32; accelerate autocasts the forward pass
        text_encoder.requires_grad_(train_text_encoder)
        if not train_text_encoder:
            text_encoder.to(device, dtype=weight_dtype)
    if training.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    text_encoder.train(train_text_encoder)
    unet.train()

    # -- data ----------------------------------------------------------------------------------------
    resolution = training.resolution
    cache = training.cache_latents
    instance_latents = LatentSource(vae, load_pixels(instance.images, resolution), cache=cache, device=device,
                                    dtype=weight_dtype)
    class_latents = None
    captions = list(instance.captions)
    if class_images is not None:
        if not class_images.images:
            raise HubtoolsError(f"no class images in {class_images.dir}: set prior.source to a folder of "
                                "class images, or delete that folder to generate them again")
        class_latents = LatentSource(vae, load_pixels(class_images.images, resolution), cache=cache, device=device,
                                     dtype=weight_dtype)
        captions.append(effective.class_prompt)
    prompts = PromptSource(tokenizer, captions, device=device)
    if not train_text_encoder:
        prompts.cache_embeddings(text_encoder, weight_dtype)
    latent_shape = instance_latents.latent_shape()

    # -- optimizer, schedule, accelerate ----------------------------------------------------------------
    trainable_models = [unet] + ([text_encoder] if train_text_encoder else [])
    params = [p for model in trainable_models for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, lr=effective.learning_rate, use_8bit=training.use_8bit_adam)
    from diffusers.optimization import get_scheduler

    # accelerate steps a prepared scheduler once per process per optimizer step
    lr_scheduler = get_scheduler(training.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=training.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=training.steps * accelerator.num_processes)
    prepared = accelerator.prepare(*trainable_models, optimizer, lr_scheduler)
    unet_p = prepared[0]
    text_encoder_p = prepared[1] if train_text_encoder else text_encoder
    optimizer, lr_scheduler = prepared[-2], prepared[-1]
    _register_weight_hooks(accelerator, unet, text_encoder if train_text_encoder else None, lora=lora)

    metrics = MetricsLog(folder.metrics, accelerator, enabled=main)
    fidelity_log = MetricsLog(folder.fidelity, accelerator, enabled=main)
    fidelity = None
    if main and effective.eval.during_training and training.validation_every:
        from hubtools.evaluation.fidelity import FidelityProbe

        fidelity = FidelityProbe.for_run(folder.root, model_id=effective.eval.dino_model, device=accelerator.device,
                                         token=token)
    if main:
        accelerator.init_trackers("hubtools", config=_hparams(effective, choice))
    start_step = 0
    if resume_from is not None:
        try:
            accelerator.load_state(str(resume_from[1]))
        except (OSError, KeyError, ValueError, RuntimeError) as error:  # forced past a change it cannot absorb
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"{resume_from[1].name} cannot be loaded with the current settings ({first[:200]}): "
                              "restore the settings it was trained with, or start over with --force") from None
        start_step = resume_from[0]
        metrics.keep_until(start_step)
        fidelity_log.keep_until(start_step)
    else:
        metrics.reset()
        fidelity_log.reset()

    # -- the loop ------------------------------------------------------------------------------------
    seed = training.seed
    per_process = training.batch_size
    accumulation = training.gradient_accumulation_steps
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    process_index, num_processes = accelerator.process_index, accelerator.num_processes

    def micro_step_loss(micro: int):
        generator = step_generator(seed, micro, process_index)
        picked = data_indices(micro, count=len(instance), per_process=per_process, process_index=process_index,
                              num_processes=num_processes, seed=seed)
        latents = [instance_latents.sample(picked, torch.randn((len(picked), *latent_shape), generator=generator))]
        batch_captions = [instance.captions[i] for i in picked]
        if class_latents is not None:
            picked_class = data_indices(micro, count=class_latents.count, per_process=per_process,
                                        process_index=process_index, num_processes=num_processes, seed=seed + 1)
            latents.append(class_latents.sample(picked_class,
                                                torch.randn((len(picked_class), *latent_shape), generator=generator)))
            batch_captions += [effective.class_prompt] * len(picked_class)
        latents = torch.cat(latents)
        count = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        offset = torch.randn((count, latents.shape[1], 1, 1), generator=generator).to(device)
        timesteps = torch.randint(0, num_train_timesteps, (count,), generator=generator).to(device)
        noisy, noise = add_noise(noise_scheduler, latents, noise, timesteps, training.offset_noise, offset)
        target = training_target(noise_scheduler, latents, noise, timesteps)
        with accelerator.autocast():
            hidden = prompts.embeddings(batch_captions, text_encoder_p)
            prediction = unet_p(noisy, timesteps, hidden).sample
        weights = snr_weights(noise_scheduler, timesteps, training.snr_gamma) if training.snr_gamma else None
        return dreambooth_loss(prediction, target, num_instance=len(picked),
                               prior_loss_weight=effective.prior.loss_weight, weights=weights)

    total = training.steps
    window: list[tuple[int, torch.Tensor, float]] = []  # (step, stacked loss parts on device, lr)
    window_started = time.perf_counter()
    loop_started = time.perf_counter()
    if main and progress:
        print(f"training: {training.method}, {total} steps from step {start_step}, batch {per_process} "
              f"x {num_processes} process(es), {describe_precision(mixed_precision)} on {device}", file=sys.stderr)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start_step, desc="training", unit="step", disable=not (progress and main),
               dynamic_ncols=True)
    rows_written: list[dict[str, Any]] = []

    def flush() -> None:
        """One host sync for the whole window: loss values, NaN check, metrics rows, bar postfix."""
        nonlocal window, window_started
        if not window:
            return
        values = torch.stack([parts for _, parts, _ in window]).tolist()
        now = time.perf_counter()
        rate = len(window) / max(now - window_started, 1e-9)
        rows = []
        for (step, _, lr), (loss, instance_loss, prior_loss) in zip(window, values):
            if not math.isfinite(loss):
                raise HubtoolsError(
                    f"the loss became {loss} at step {step}: lower the learning rate (now {effective.learning_rate:g}) "
                    f"or use --mixed-precision bf16/no instead of {mixed_precision}; resume from the last "
                    "checkpoint with --resume --force after changing it"
                )
            rows.append({"step": step, "loss": loss, "instance_loss": instance_loss,
                         "prior_loss": prior_loss if class_latents is not None else None, "lr": lr,
                         "it/s": rate, "time": round(now - started, 3)})
        metrics.write(rows)
        rows_written.extend(rows)
        postfix = {"loss": f"{rows[-1]['loss']:.4f}"}
        if device.type == "cuda":
            postfix["mem"] = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}GB"
        bar.set_postfix(postfix, refresh=False)
        window, window_started = [], now

    try:
        for step in range(start_step, total):
            where.step = step + 1
            summed = None
            for k in range(accumulation):
                with accelerator.accumulate(*trainable_models):
                    parts = micro_step_loss(step * accumulation + k)
                    accelerator.backward(parts.loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, training.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                prior = parts.prior_loss if parts.prior_loss is not None else torch.zeros_like(parts.loss)
                stacked = torch.stack([parts.loss, parts.instance_loss, prior]).detach() / accumulation
                summed = stacked if summed is None else summed + stacked
            done = step + 1
            window.append((done, summed, lr_scheduler.get_last_lr()[0]))
            bar.update(1)
            checkpoint_due = training.checkpoint_every and done % training.checkpoint_every == 0
            validation_due = training.validation_every and done % training.validation_every == 0
            if done % LOG_EVERY == 0 or done == total or checkpoint_due or validation_due:
                flush()
            if checkpoint_due:
                ckpt.save_checkpoint(accelerator, folder.checkpoints, done, {
                    "step": done, "config": comparable, "memory_choice": choice.to_dict(),
                    "class_images_key": class_images.cache_key if class_images else None,
                    "base_revision": base.revision,
                    "hubtools_version": hubtools.__version__,
                }, keep=training.keep_checkpoints)
            if validation_due:
                if main:
                    images = _validate(effective, accelerator, pipe, unet, text_encoder, weight_dtype,
                                       mixed_precision, validation_path(folder.images, done))
                    if fidelity is not None:
                        fidelity_log.write([{"step": done, "dino": round(fidelity.score(images), 6)}])
                accelerator.wait_for_everyone()
        flush()
    finally:
        bar.close()
    loop_seconds = time.perf_counter() - loop_started

    # -- outputs ---------------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    weight_files: list[dict[str, Any]] = []
    if main:
        unet_final = accelerator.unwrap_model(unet_p)
        text_final = accelerator.unwrap_model(text_encoder_p) if train_text_encoder else text_encoder
        if lora:
            weight_files = _save_final_lora(folder.root, unet_final, text_final if train_text_encoder else None)
        else:
            weight_files = _save_final_pipeline(folder.root, pipe, unet_final, text_final)
        all_rows = read_jsonl(folder.metrics)
        plot_loss_curve(all_rows, folder.images / "loss_curve.png",
                        title=f"DreamBooth {training.method} training loss ({total} steps)",
                        fidelity=read_jsonl(folder.fidelity))
    accelerator.wait_for_everyone()
    accelerator.end_training()

    tail_rows = read_jsonl(folder.metrics)[-LOSSES_TAIL:] if main else rows_written[-LOSSES_TAIL:]
    steps_run = total - start_step
    result = TrainResult(
        method=training.method, steps_done=total, steps_total=total,
        final_loss=tail_rows[-1]["loss"] if tail_rows else None,
        losses_tail=[row["loss"] for row in tail_rows],
        wall_seconds=round(time.perf_counter() - started, 3),
        steps_per_second=round(steps_run / loop_seconds, 4) if steps_run and loop_seconds > 0 else None,
        peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        device=str(device), mixed_precision=mixed_precision, memory_profile=choice.profile,
        memory_profile_reason=choice.reason, base_model=base.model_id, base_revision=base.revision,
        weight_files=weight_files, checkpoints=[s for s, _ in ckpt.list_checkpoints(folder.checkpoints)],
        class_images=class_images.to_dict() if class_images else None, num_instance_images=len(instance),
        resumed_from=resume_from[0] if resume_from else None, num_processes=num_processes,
        settings={"learning_rate": effective.learning_rate, "batch_size": per_process,
                  "gradient_accumulation_steps": accumulation, "use_8bit_adam": training.use_8bit_adam,
                  "gradient_checkpointing": training.gradient_checkpointing, "cache_latents": cache,
                  "train_text_encoder": train_text_encoder, "resolution": resolution},
    )
    if main:
        write_json_atomic(folder.train_result, result.to_dict())
    return result


# -- helpers -------------------------------------------------------------------------------------------


def _forget_previous_accelerator() -> None:
    """accelerate keeps its settings (mixed precision, accumulation) in a process-wide singleton that
    refuses new values; a second run in the same process (a notebook, tests) may need different ones. The
    process group (``PartialState``) is kept: under ``accelerate launch`` it must survive."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _make_optimizer(params, *, lr: float, use_8bit: bool):
    if use_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("8-bit Adam needs bitsandbytes: pip install 'hubtools[bnb]', or drop --use-8bit-adam") from None
        return bnb.optim.AdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)


def _register_weight_hooks(accelerator, unet, text_encoder, *, lora: bool) -> None:
    """Checkpoints hold only the trainable weights, as safetensors in diffusers layout (not accelerate's
    whole-model ``model.safetensors``: for LoRA that would be the frozen UNet again in every checkpoint)."""
    from safetensors.torch import load_file

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            out = Path(output_dir)
            if lora:
                from hubtools.training.lora import save_lora

                save_lora(out, unet, text_encoder)
            else:
                unet.save_pretrained(out / "unet", safe_serialization=True)
                if text_encoder is not None:
                    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
        weights.clear()  # accelerate must not save the models itself

    def load_hook(models, input_dir):
        models.clear()  # loaded here, not by accelerate
        folder = Path(input_dir)
        if lora:
            from hubtools.training.lora import load_lora_state

            load_lora_state(folder, unet, text_encoder)
            return
        unet.load_state_dict(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"))
        if text_encoder is not None:
            text_encoder.load_state_dict(load_file(folder / "text_encoder" / "model.safetensors"), strict=False)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _validate(cfg: RunConfig, accelerator, pipe, unet, text_encoder, weight_dtype, mixed_precision,
              path: Path) -> list:
    return render_validation_grid(
        unet=unet, vae=pipe.vae, text_encoder=text_encoder, tokenizer=pipe.tokenizer,
        scheduler_config=pipe.scheduler.config, prompts=cfg.sample_prompts, seeds=cfg.sampling.seeds,
        num_inference_steps=cfg.sampling.num_inference_steps, resolution=cfg.training.resolution,
        device=accelerator.device, autocast_dtype=None if mixed_precision == "no" else weight_dtype, path=path,
    )


def _file_entry(root: Path, path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": path.relative_to(root).as_posix(), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _save_final_lora(root: Path, unet, text_encoder) -> list[dict[str, Any]]:
    from hubtools.training.lora import save_lora

    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-lora-") as tmp:
        saved = save_lora(Path(tmp), unet, text_encoder)
        os.replace(saved, root / LORA_WEIGHTS_FILENAME)
    return [_file_entry(root, root / LORA_WEIGHTS_FILENAME)]


def _save_final_pipeline(root: Path, pipe, unet, text_encoder) -> list[dict[str, Any]]:
    """The whole pipeline in diffusers layout, fp32 as the base was; each component folder is swapped in
    by rename and model_index.json comes last, so a crash never leaves a loadable half-model."""
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
            target = root / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        os.replace(Path(tmp) / "model_index.json", root / "model_index.json")
    return [_file_entry(root, p) for p in sorted(root.glob("*/*.safetensors"))
            if p.parent.name in ("unet", "vae", "text_encoder")]


def _hparams(cfg: RunConfig, choice: MemoryChoice) -> dict[str, Any]:
    """Flat scalars for TensorBoard's hparams view."""
    values = {f"training.{k}": v for k, v in cfg.training.model_dump().items()}
    values.update({"prior.enabled": cfg.prior.enabled, "prior.loss_weight": cfg.prior.loss_weight,
                   "base_model": cfg.model.base_model, "memory_profile": choice.profile})
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
