"""The training stage: ``train_dreambooth(cfg, run_dir)`` fine-tunes the base model on the prepared concept
set (full UNet or LoRA, with prior preservation) and leaves the model, checkpoints, logs and
``train_result.json`` in the run folder (see ``hubtools.runfolder``).

It runs unchanged under ``accelerate launch`` / ``torchrun`` (DDP): every process trains on its own shard of
each global batch; only the main process writes files. Every random draw of a step comes from a generator
seeded by (seed, step): each process draws the whole global batch's noise and keeps its rows, so a resumed
run ends with the same weights as an uninterrupted one on CPU, and 2 processes at batch 1 with those of one
process at batch 2 (to float rounding: the gradients are averaged across processes in another order).

``_train`` is the recipe, one call per phase; what flows between the phases travels in small dataclasses
(``_TrainingSession`` here, ``TrainingPlan`` from ``resume``, ``TrainableModels`` and ``Optimization`` from ``trainable``,
``TrainingData`` from ``data``, ``_Logs`` here).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hubtools import distributed
from hubtools.base_model import record_of_run
from hubtools.config import RunConfig, describe_precision
from hubtools.devices import resolve_device
from hubtools.errors import ConfigError
from hubtools.families import Family
from hubtools.pipelines import with_family_defaults
from hubtools.reporting import Reporter, SilentReporter, reporter_or_silent
from hubtools.runfolder import ClassImagesUsed, RunFolder, TrainResult, WeightFile, read_jsonl
from hubtools.training import checkpoints as ckpt
from hubtools.training.data import (
    CaptionDraws, Examples, TrainingData, at_resolutions, concept_fingerprint, encode_training_data, load_instance_examples,
    own_rows, step_generator,
)
from hubtools.training.final_weights import save_final_lora, save_final_pipeline
from hubtools.training.loss import LossParts, dreambooth_loss
from hubtools.training.memory import MemoryChoice, out_of_memory_error
from hubtools.training.metrics import LossWindow, MetricsLog, plot_loss_curve
from hubtools.training.resume import TrainingPlan, checkpoint_state, load_checkpoint, plan_training
from hubtools.training.sharding import gathered
from hubtools.training.trainable import (
    Optimization, TrainableModels, load_trainable_models, prepare_optimization,
)
from hubtools.training.validation import render_validation_grid, validation_path

if TYPE_CHECKING:
    from hubtools.evaluation.fidelity import FidelityProbe

logger = logging.getLogger("hubtools")

LOG_EVERY = 10  # steps between host syncs (loss values, NaN check, progress-bar postfix, metrics rows)
LOSSES_TAIL = 10
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
class _OutOfMemoryContext:
    """How far a run got, for the out-of-memory message."""

    effective: RunConfig | None = None
    choice: MemoryChoice | None = None
    step: int | None = None  # None: still loading
    family: Family | None = None  # the base model's family (its memory profiles)


def train_dreambooth(cfg: RunConfig, run_dir: Path, *, resume: bool = False, force: bool = False,
                     token: str | None = None, reporter: Reporter | None = None, progress: bool = True) -> TrainResult:
    """Train the run in ``run_dir`` (config and concept set already there); ``resume`` continues from the
    newest checkpoint. Notes, progress, metrics and artifacts go to ``reporter`` (the main process's only;
    ``progress=False`` drops the progress events, for library callers). Raises ``ConfigError`` when a resume's
    config changed, unless ``force``; a CUDA out-of-memory error becomes a ``HubtoolsError`` naming the next smaller memory profile."""
    where = _OutOfMemoryContext()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        return _train(cfg, Path(run_dir), resume=resume, force=force, token=token,
                      reporter=reporter_or_silent(reporter, progress=progress), where=where)
    except torch.OutOfMemoryError:
        if where.choice is None:
            raise
        raise out_of_memory_error(where.effective, where.choice, where.step, where.family) from None
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


# -- the recipe ------------------------------------------------------------------------------------------


def _train(cfg: RunConfig, run_dir: Path, *, resume: bool, force: bool, token: str | None, reporter: Reporter,
           where: _OutOfMemoryContext) -> TrainResult:
    """The recipe. The order of the phases is part of exact resume: the accelerate calls (prepare, hooks,
    trackers, load_state) and the draws from the global RNG must come in the same order on every run."""
    started = time.perf_counter()
    record = record_of_run(run_dir, cfg.model, token=token)  # the base model preflight resolved
    family, cfg = with_family_defaults(cfg, record=record)  # its family's defaults for the settings left unset
    where.family = family  # its memory profiles
    cfg = cfg.resolve()
    run = _start_accelerator(cfg, RunFolder(Path(run_dir)), reporter=reporter, token=token, started=started)
    instance = at_resolutions(load_instance_examples(run.folder.concept, cfg.instance_prompt),
                              cfg.training.resolutions, family.size_multiple)
    plan = plan_training(cfg, run.folder, run.accelerator, concept_fingerprint=concept_fingerprint(instance),
                         resume=resume, force=force, family=where.family, parameters=record.parameter_count)
    where.effective, where.choice = plan.trained_config, plan.choice
    run.reporter.note(f"memory profile: {plan.choice.profile} ({plan.choice.reason})")
    models = load_trainable_models(plan.trained_config, run.accelerator, record=record, seed=cfg.training.seed,
                                   weight_dtype=run.weight_dtype, token=run.token, reporter=run.reporter,
                                   class_image_sizes=instance.bucket_counts())
    data = _encode_data(run, plan.trained_config, models, instance)
    optimization = prepare_optimization(plan.trained_config, models, run.accelerator)
    logs = _open_logs(run, plan)
    start_step = _restore_or_reset(run, plan, logs)
    loop = _train_steps(run, plan, models, data, optimization, logs, start_step=start_step, where=where)
    weight_files = _write_final_outputs(run, plan, models, optimization)
    result = _summarise(run, plan, models, data, loop, weight_files)
    if run.main:
        result.write(run.folder)
    return result


# -- what flows between the phases -----------------------------------------------------------------------


@dataclass
class _TrainingSession:
    """What every phase needs: the run folder, the accelerator and its precision, whom to tell."""

    folder: RunFolder
    accelerator: Any  # accelerate.Accelerator
    mixed_precision: str  # no|fp16|bf16, as resolved for the device
    reporter: Reporter  # silent on every process but the main one
    token: str | None
    started: float  # time.perf_counter() at the start: wall time, and the metrics rows' time column

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the frozen parts (trainable weights stay fp32)."""
        return _DTYPES[self.mixed_precision]


@dataclass
class _Logs:
    """Where the loop's numbers go (files on the main process only; other processes hold disabled logs)."""

    metrics: MetricsLog  # logs/metrics.jsonl and TensorBoard
    fidelity_log: MetricsLog  # logs/fidelity.jsonl
    fidelity: FidelityProbe | None  # scores validation grids: main process, with eval.during_training

    def keep_until(self, step: int) -> None:
        self.metrics.keep_until(step)
        self.fidelity_log.keep_until(step)

    def reset(self) -> None:
        self.metrics.reset()
        self.fidelity_log.reset()


@dataclass
class _LoopOutcome:
    """What the loop leaves for train_result.json."""

    start_step: int
    seconds: float  # the loop alone, for steps per second
    rows: list[dict[str, Any]]  # the metrics rows this process computed


# -- the phases ------------------------------------------------------------------------------------------


def _start_accelerator(cfg: RunConfig, folder: RunFolder, *, reporter: Reporter, token: str | None,
                       started: float) -> _TrainingSession:
    """A fresh accelerator for this run's device, precision and accumulation; deterministic kernels on CPU."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    wanted_device = resolve_device(cfg.training.device)
    mixed_precision = resolve_mixed_precision(cfg.training.mixed_precision, wanted_device)
    distributed.set_up(cpu=wanted_device.type == "cpu")  # under a launcher: the process group, threads per process
    _forget_previous_accelerator()
    accelerator = Accelerator(
        cpu=wanted_device.type == "cpu", mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.training.gradient_accumulation_steps, log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(folder.logs), logging_dir=str(folder.logs / "tensorboard")),
    )
    if accelerator.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)  # exact resume; costs nothing on CPU
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # Under several processes only the main one reports.
    reporter = reporter if accelerator.is_main_process else SilentReporter()
    return _TrainingSession(folder, accelerator, mixed_precision, reporter=reporter, token=token, started=started)


def _encode_data(run: _TrainingSession, cfg: RunConfig, models: TrainableModels, instance: Examples) -> TrainingData:
    """Latents by the frozen VAE; caption embeddings cached unless a text encoder trains."""
    return encode_training_data(
        instance, models.class_images, class_prompt=cfg.class_prompt, family=models.family, parts=models.parts,
        frozen_text_encoders=None if models.trained_text_encoders else models.text_encoders,
        resolution=cfg.training.main_resolution, cache_latents=cfg.training.cache_latents, device=run.device,
        dtype=run.weight_dtype,
        caption_draws=CaptionDraws(cfg.training.caption_dropout, cfg.training.shuffle_caption_parts),
    )


def _open_logs(run: _TrainingSession, plan: TrainingPlan) -> _Logs:
    """The metrics logs, the fidelity probe when validation grids are scored, and TensorBoard's trackers."""
    cfg = plan.trained_config
    logs = _Logs(MetricsLog(run.folder.metrics, run.accelerator, enabled=run.main),
                 MetricsLog(run.folder.fidelity, run.accelerator, enabled=run.main), fidelity=None)
    if run.main and cfg.eval.during_training and cfg.training.validation_every:
        from hubtools.evaluation.fidelity import FidelityProbe

        logs.fidelity = FidelityProbe.for_run(run.folder.root, model_id=cfg.eval.dino_model,
                                              device=run.accelerator.device, token=run.token)
    if run.main:
        run.accelerator.init_trackers("hubtools", config=_hparams(cfg, plan.choice))
    return logs


def _restore_or_reset(run: _TrainingSession, plan: TrainingPlan, logs: _Logs) -> int:
    """The step to start from. A resume loads the checkpoint and forgets the metrics rows after it (it
    computes them again); a fresh start begins with empty logs."""
    if plan.resume_from is None:
        logs.reset()
        return 0
    step, checkpoint = plan.resume_from
    load_checkpoint(run.accelerator, checkpoint)
    logs.keep_until(step)
    return step


def _train_steps(run: _TrainingSession, plan: TrainingPlan, models: TrainableModels, data: TrainingData, optimization: Optimization,
                 logs: _Logs, *, start_step: int, where: _OutOfMemoryContext) -> _LoopOutcome:
    """Every optimizer step from ``start_step`` on, with checkpoints and validation grids when due."""
    cfg, training = plan.trained_config, plan.trained_config.training
    total = training.steps
    loop_started = time.perf_counter()
    run.reporter.note(f"training: {training.method}, {total} steps from step {start_step}, batch {training.batch_size} "
            f"x {run.accelerator.num_processes} process(es){', sharded with FSDP2' if optimization.sharded else ''}, "
            f"{describe_precision(run.mixed_precision)} on {run.device}")
    if optimization.sharded and training.validation_every:
        run.reporter.note("no validation grids under FSDP (the sharded model runs on every process at once): "
                          "the checkpoints' sample grids come after training")
    run.reporter.progress("training", start_step, total)
    window = LossWindow(logs.metrics, run.reporter, run.device, has_prior=data.has_prior,
                        learning_rate=cfg.learning_rate, mixed_precision=run.mixed_precision,
                        run_started=run.started, started=loop_started)
    for step in range(start_step, total):
        where.step = step + 1
        loss_parts = _optimizer_step(step, run, cfg, models, data, optimization)
        done = step + 1
        window.add(done, loss_parts, optimization.lr_scheduler.get_last_lr()[0])
        run.reporter.progress("training", done, total)
        checkpoint_due = training.checkpoint_every and done % training.checkpoint_every == 0
        validation_due = training.validation_every and done % training.validation_every == 0
        if done % LOG_EVERY == 0 or done == total or checkpoint_due or validation_due:
            window.flush()
        if checkpoint_due:
            class_images_key = models.class_images.cache_key if models.class_images else None
            saved = ckpt.save_checkpoint(run.accelerator, run.folder.checkpoints, done, checkpoint_state(
                plan, done, class_images_key=class_images_key, base_revision=models.base.revision,
            ), keep=training.keep_checkpoints)
            run.reporter.artifact("checkpoint", run.folder.relative(saved), step=done)
        if validation_due and not optimization.sharded:  # FSDP: one process cannot run the sharded model alone
            _validate(run, cfg, models, logs, done)
    window.flush()
    return _LoopOutcome(start_step, time.perf_counter() - loop_started, window.rows)


def _write_final_outputs(run: _TrainingSession, plan: TrainingPlan, models: TrainableModels,
                         optimization: Optimization) -> list[dict[str, Any]]:
    """The final weights and the loss curve, on the main process once every process is done; returns the
    weight files (none on the other processes)."""
    accelerator, training = run.accelerator, plan.trained_config.training
    accelerator.wait_for_everyone()
    weight_files: list[WeightFile] = []
    whole = gathered(models.trained) if optimization.sharded else None  # FSDP: every process sends its shards
    if run.main:
        trained = whole or {name: accelerator.unwrap_model(model) for name, model in models.trained.items()}
        if models.lora:
            weight_files = save_final_lora(run.folder.root, models.family, trained,
                                           kohya_name=kohya_name(plan.trained_config, run.folder.root))
        else:
            weight_files = save_final_pipeline(run.folder.root, models.family, models.base.pipeline, trained)
        curve = plot_loss_curve(read_jsonl(run.folder.metrics), run.folder.loss_curve,
                                title=f"DreamBooth {training.method} training loss ({training.steps} steps)",
                                fidelity=read_jsonl(run.folder.fidelity))
        if curve is not None:
            run.reporter.artifact("loss_curve", run.folder.relative(curve))
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # not end_training(): the stages after training still use the process group
        tracker.finish()
    return weight_files


def _summarise(run: _TrainingSession, plan: TrainingPlan, models: TrainableModels, data: TrainingData, loop: _LoopOutcome,
               weight_files: list[WeightFile]) -> TrainResult:
    """What ``train_result.json`` says. The main process reads the losses back from metrics.jsonl, which
    after a resume also holds the rows from before the checkpoint; other processes have only their own."""
    training, device = plan.trained_config.training, run.device
    total = training.steps
    tail_rows = read_jsonl(run.folder.metrics)[-LOSSES_TAIL:] if run.main else loop.rows[-LOSSES_TAIL:]
    steps_run = total - loop.start_step
    return TrainResult(
        method=training.method, steps_done=total, steps_total=total,
        final_loss=tail_rows[-1]["loss"] if tail_rows else None,
        losses_tail=[row["loss"] for row in tail_rows],
        wall_seconds=round(time.perf_counter() - run.started, 3),
        steps_per_second=round(steps_run / loop.seconds, 4) if steps_run and loop.seconds > 0 else None,
        peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        device=str(device), mixed_precision=run.mixed_precision, memory_profile=plan.choice.profile,
        memory_profile_reason=plan.choice.reason, base_model=models.base.model_id,
        base_revision=models.base.revision, weight_files=weight_files,
        checkpoints=[s for s, _ in ckpt.list_checkpoints(run.folder.checkpoints)],
        class_images=ClassImagesUsed(**models.class_images.to_dict()) if models.class_images else None,
        num_instance_images=len(data.instance),
        resumed_from=plan.resume_from[0] if plan.resume_from else None, num_processes=run.accelerator.num_processes,
        settings={"family": models.family.name,
                  "guidance_embeds": bool(getattr(models.denoiser.config, "guidance_embeds", False)),
                  "learning_rate": plan.trained_config.learning_rate,
                  "batch_size": training.batch_size,
                  "gradient_accumulation_steps": training.gradient_accumulation_steps,
                  "use_8bit_adam": training.use_8bit_adam, "gradient_checkpointing": training.gradient_checkpointing,
                  "cache_latents": training.cache_latents, "train_text_encoder": models.train_text_encoder,
                  "resolution": training.resolution,
                  **({"buckets": {f"{b.size[0]}x{b.size[1]}": len(b.members) for b in data.buckets}}
                     if data.instance.sizes is not None else {}),
                  **({"caption_dropout": training.caption_dropout} if training.caption_dropout else {}),
                  **({"shuffle_caption_parts": True} if training.shuffle_caption_parts else {})},
    )


# -- one step --------------------------------------------------------------------------------------------


def _optimizer_step(step: int, run: _TrainingSession, cfg: RunConfig, models: TrainableModels, data: TrainingData,
                    optimization: Optimization) -> torch.Tensor:
    """One optimizer step over the accumulated micro-batches. Returns (loss, instance loss, prior loss)
    averaged over them and left on the device: reading them back is a host sync, done once per window."""
    accelerator, accumulation = run.accelerator, cfg.training.gradient_accumulation_steps
    summed = None
    for k in range(accumulation):
        with accelerator.accumulate(*optimization.models):
            parts = _micro_batch_loss(step * accumulation + k, run, cfg, models, data, optimization)
            accelerator.backward(parts.loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(optimization.params, cfg.training.max_grad_norm)
            optimization.optimizer.step()
            optimization.lr_scheduler.step()
            optimization.optimizer.zero_grad(set_to_none=True)
        prior = parts.prior_loss if parts.prior_loss is not None else torch.zeros_like(parts.loss)
        stacked = torch.stack([parts.loss, parts.instance_loss, prior]).detach() / accumulation
        summed = stacked if summed is None else summed + stacked
    return summed


def _micro_batch_loss(micro: int, run: _TrainingSession, cfg: RunConfig, models: TrainableModels, data: TrainingData,
                      optimization: Optimization) -> LossParts:
    """The DreamBooth loss of this process's share of one micro-batch. Every draw comes from the micro-step's
    own generator, always in the same order, so a resumed run draws what an uninterrupted one would."""
    training, family = cfg.training, models.family
    process, processes = run.accelerator.process_index, run.accelerator.num_processes
    generator = step_generator(training.seed, micro)  # the same on every process: each keeps its rows
    latents, captions, num_instance, bucket, examples = data.draw(
        micro, generator, seed=training.seed, per_process=training.batch_size,
        process_index=process, num_processes=processes)
    batch = _noisy_batch(family, models.noise_scheduler, latents, generator, training, run.device,
                         own_rows(process, training.batch_size, processes, with_prior=data.has_prior),
                         training.batch_size * processes * (2 if data.has_prior else 1))
    with run.accelerator.autocast():
        conditioning = family.with_image_conditioning(
            data.prompts.embeddings(captions, optimization.text_encoders),
            data.geometry(examples, len(captions) - num_instance), bucket.size)
        prediction = family.predict(optimization.denoiser, batch.model_input, batch.timesteps, conditioning)
    return dreambooth_loss(prediction, batch.target, num_instance=num_instance,
                           prior_loss_weight=cfg.prior.loss_weight, weights=batch.weights)


def _noisy_batch(family, scheduler, latents: torch.Tensor, generator: torch.Generator, training, device: torch.device,
                 rows: list[int], global_rows: int):
    """The family's noise and timesteps for this process's ``rows`` of the global batch. The family draws for
    the whole global batch (its draws depend only on the batch's shape; the other processes' rows are zeros and
    are thrown away), so they are what one process at the global batch size draws."""
    if global_rows == latents.shape[0]:  # one process: its batch is the global batch
        return family.noisy_input_and_target(scheduler, latents, generator, training, device)
    whole = latents.new_zeros((global_rows, *latents.shape[1:]))
    whole[rows] = latents
    drawn = family.noisy_input_and_target(scheduler, whole, generator, training, device)
    return replace(drawn, **{name: value[rows] for name, value in vars(drawn).items()
                                         if isinstance(value, torch.Tensor)})


def _validate(run: _TrainingSession, cfg: RunConfig, models: TrainableModels, logs: _Logs, step: int) -> None:
    """The validation grid of ``step`` on the main process, scored for subject fidelity when that is on;
    the other processes wait for it."""
    if run.main:
        family, parts = models.family, models.parts
        denoiser_config = dict(models.denoiser.config)
        images = render_validation_grid(
            pipe=family.pipeline(parts, scheduler=family.validation_scheduler(parts["scheduler"].config)),
            denoiser=models.denoiser, prompts=cfg.sample_prompts, seeds=cfg.sampling.seeds,
            num_inference_steps=cfg.sampling.num_inference_steps, resolution=cfg.training.main_resolution,
            device=run.accelerator.device, autocast_dtype=None if run.mixed_precision == "no" else run.weight_dtype,
            path=validation_path(run.folder.images, step), call_kwargs=family.call_kwargs(denoiser_config),
        )
        run.reporter.artifact("validation_grid", run.folder.relative(validation_path(run.folder.images, step)),
                              step=step)
        if logs.fidelity is not None:
            logs.fidelity_log.write([{"step": step, "dino": round(logs.fidelity.score(images), 6)}])
    run.accelerator.wait_for_everyone()


# -- helpers ---------------------------------------------------------------------------------------------


def kohya_name(cfg: RunConfig, root: Path) -> str:
    """The name of the kohya-layout LoRA file: the model's repo name, else the run folder's."""
    repo_id = cfg.publish.repo_id
    return repo_id.split("/")[-1] if repo_id else Path(root).resolve().name


def _forget_previous_accelerator() -> None:
    """accelerate keeps its settings (mixed precision, accumulation) in a process-wide singleton that
    refuses new values; a second run in the same process (a notebook, tests) may need different ones. The
    process group (``PartialState``) is kept: under ``accelerate launch`` it must survive."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _hparams(cfg: RunConfig, choice: MemoryChoice) -> dict[str, Any]:
    """Flat scalars for TensorBoard's hparams view."""
    values = {f"training.{k}": v for k, v in cfg.training.model_dump().items()}
    values.update({"prior.enabled": cfg.prior.enabled, "prior.loss_weight": cfg.prior.loss_weight,
                   "base_model": cfg.model.base_model, "memory_profile": choice.profile})
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
