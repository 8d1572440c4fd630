"""The base model set up for training: which parts train and in which dtype (the full UNet, or LoRA
adapters on frozen weights; the text encoder too, when asked), then the optimizer and LR schedule over the
trainable weights, handed to accelerate with the hooks that make checkpoints hold only those weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hubtools.config import RunConfig, TrainingConfig
from hubtools.errors import ConfigError
from hubtools.families import Family
from hubtools.pipelines import BaseModel, BaseModelRecord, load_base_model
from hubtools.reporting import Reporter
from hubtools.training import checkpoints as ckpt

if TYPE_CHECKING:
    from hubtools.prior import ClassImages


@dataclass
class TrainableModels:
    """The base pipeline set up for training: adapters added, frozen parts cast to the weight dtype."""

    base: BaseModel
    family: Family
    class_images: ClassImages | None  # rendered by the untouched base; None without prior preservation
    noise_scheduler: Any  # the family's training scheduler (DDPM, or flow matching for FLUX)
    lora: bool
    train_text_encoder: bool

    @property
    def parts(self) -> dict[str, Any]:
        """The base pipeline's components by name."""
        return self.base.pipeline.components

    @property
    def denoiser(self):
        return self.parts[self.family.denoiser]

    @property
    def vae(self):
        return self.parts["vae"]

    @property
    def text_encoders(self) -> dict[str, Any]:
        return {name: self.parts[name] for name in self.family.text_encoders}

    @property
    def trained_text_encoders(self) -> tuple[str, ...]:
        """The text encoders that train (with ``train_text_encoder``: those the family lets train)."""
        return self.family.trainable_text_encoders if self.train_text_encoder else ()

    @property
    def trained(self) -> dict[str, Any]:
        """The trained components by name, denoiser first (unwrapped: as the base pipeline holds them)."""
        return {self.family.denoiser: self.denoiser, **{name: self.parts[name] for name in self.trained_text_encoders}}


@dataclass
class Optimization:
    """What each optimizer step uses: the trainable models, their parameters, optimizer and LR schedule."""

    models: list[torch.nn.Module]  # as they were before accelerate wrapped them; accumulate() takes these
    params: list[torch.nn.Parameter]
    optimizer: Any  # prepared by accelerate
    lr_scheduler: Any  # prepared by accelerate
    denoiser: Any  # prepared (DDP-wrapped under several processes; sharded in place under FSDP)
    text_encoders: dict[str, Any]  # by component name: prepared when trained, else the frozen one
    sharded: bool = False  # FSDP2: the trained models and the optimizer state are split across the processes


def load_trainable_models(cfg: RunConfig, accelerator, *, record: BaseModelRecord | None = None, seed: int,
                          weight_dtype: torch.dtype, token: str | None,
                          reporter: Reporter, class_image_sizes: dict[tuple[int, int], int] | None = None,
                          ) -> TrainableModels:
    """The base model, its class images for prior preservation (at the instance images' bucket sizes, in their
    proportions: ``class_image_sizes``; None: the training square), then its parts set up for training."""
    from accelerate.utils import set_seed

    device = accelerator.device
    set_seed(seed)  # LoRA's initial weights come from the global RNG
    base = load_base_model(cfg.model, record=record, device=device, dtype=torch.float32, token=token)
    family = base.family
    missing = [name for name in family.components() if base.pipeline.components.get(name) is None]
    if missing:
        raise ConfigError(f"base model {base.model_id} has no {', '.join(missing)}: use a complete {family.title} "
                          "diffusers pipeline")
    family.check_training(cfg.training.method, base.pipeline.components[family.denoiser], device,
                          shards=accelerator.num_processes if cfg.training.distributed == "fsdp" else 1)
    class_images = None
    if cfg.prior.enabled:  # before any adapter or cast: class images come from the untouched base
        from hubtools.prior import ensure_class_images

        # every process renders its share (hubtools.distributed); one per machine writes the set
        class_images = ensure_class_images(cfg, base, device=device, reporter=reporter, sizes=class_image_sizes)

    models = TrainableModels(base, family, class_images, family.training_scheduler(base.pipeline.scheduler.config),
                             lora=cfg.training.method == "lora", train_text_encoder=cfg.training.train_text_encoder)
    _set_up_for_training(models, cfg.training, device, weight_dtype)
    return models


def _set_up_for_training(models: TrainableModels, training: TrainingConfig, device: torch.device,
                         weight_dtype: torch.dtype) -> None:
    """Freeze and cast what is not trained; add LoRA adapters, or unfreeze the full model."""
    denoiser, vae, family = models.denoiser, models.vae, models.family
    text_encoders, trained_encoders = models.text_encoders, models.trained_text_encoders
    vae.requires_grad_(False)
    vae.to(device, dtype=weight_dtype)
    family.use_fast_attention(denoiser)
    if models.lora:
        from hubtools.training.lora import add_lora_adapters

        denoiser.requires_grad_(False)
        for encoder in text_encoders.values():
            encoder.requires_grad_(False)
        denoiser.to(device, dtype=weight_dtype)
        for encoder in text_encoders.values():
            encoder.to(device, dtype=weight_dtype)
        add_lora_adapters(denoiser, {name: text_encoders[name] for name in trained_encoders}, rank=training.lora_rank,
                          alpha=training.lora_alpha, denoiser_targets=family.denoiser_lora_targets,
                          text_encoder_targets=family.text_encoder_lora_targets)
    else:
        denoiser.requires_grad_(True)  # trainable weights stay fp32; accelerate autocasts the forward pass
        for name, encoder in text_encoders.items():
            encoder.requires_grad_(name in trained_encoders)
            if name not in trained_encoders:
                encoder.to(device, dtype=weight_dtype)
    if training.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
        for name in trained_encoders:
            text_encoders[name].gradient_checkpointing_enable()
    for name, encoder in text_encoders.items():
        encoder.train(name in trained_encoders)
    denoiser.train()


def prepare_optimization(cfg: RunConfig, models: TrainableModels, accelerator) -> Optimization:
    """Optimizer and LR schedule for the trainable weights, all handed to ``accelerator.prepare``, then the
    checkpoint hooks registered."""
    from diffusers.optimization import get_scheduler

    training = cfg.training
    if training.distributed == "fsdp" and accelerator.num_processes > 1:
        return _sharded_optimization(cfg, models, accelerator)
    trainable_models = list(models.trained.values())  # denoiser first
    params = [p for model in trainable_models for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, lr=cfg.learning_rate, use_8bit=training.use_8bit_adam)
    # accelerate steps a prepared scheduler once per process per optimizer step
    lr_scheduler = get_scheduler(training.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=training.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=training.steps * accelerator.num_processes)
    prepared = accelerator.prepare(*trainable_models, optimizer, lr_scheduler)
    ckpt.register_weight_hooks(accelerator, models.family, models.trained, lora=models.lora)
    prepared_by_name = dict(zip(models.trained, prepared))
    text_encoders = {name: prepared_by_name.get(name, encoder) for name, encoder in models.text_encoders.items()}
    return Optimization(trainable_models, params, optimizer=prepared[-2], lr_scheduler=prepared[-1],
                        denoiser=prepared[0], text_encoders=text_encoders)


def _sharded_optimization(cfg: RunConfig, models: TrainableModels, accelerator) -> Optimization:
    """FSDP2: the trained models sharded in place (``training.sharding``; a LoRA's frozen base too), the
    optimizer over their shards. Only
    the LR schedule goes to accelerate (which would wrap the models in DDP on CPU, and save the optimizer
    from the main process alone): the weights and optimizer states go into sharded checkpoints."""
    from diffusers.optimization import get_scheduler

    from hubtools.training import sharding

    training = cfg.training
    sharding.shard(models.trained, accelerator.device)
    trainable_models = list(models.trained.values())
    params = [p for model in trainable_models for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, lr=cfg.learning_rate, use_8bit=training.use_8bit_adam, fused=False)
    lr_scheduler = accelerator.prepare(get_scheduler(  # accelerate steps it once per process, as above
        training.lr_scheduler, optimizer=optimizer, num_warmup_steps=training.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=training.steps * accelerator.num_processes))
    ckpt.register_weight_hooks(accelerator, models.family, models.trained, lora=models.lora,
                               sharded_optimizer=optimizer)
    return Optimization(trainable_models, params, optimizer=optimizer, lr_scheduler=lr_scheduler,
                        denoiser=trainable_models[0], text_encoders=models.text_encoders, sharded=True)


def _make_optimizer(params, *, lr: float, use_8bit: bool, fused: bool = True):
    """AdamW (8-bit from bitsandbytes when asked). ``fused``: torch's one-kernel AdamW where the parameters allow
    it (CPU or CUDA, floating point): the same update as the default per-tensor loop, without a handful of small
    ops per parameter tensor each step (about 8 % of a tiny LoRA step on CPU). FSDP's sharded parameters keep
    the default."""
    if use_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("8-bit Adam needs bitsandbytes: pip install 'hubtools[bnb]', or set training.use_8bit_adam = false") from None
        return bnb.optim.AdamW8bit(params, lr=lr)
    if fused and params and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                                and type(p) is torch.nn.Parameter for p in params):
        try:
            return torch.optim.AdamW(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a torch without a fused AdamW for this device
            pass
    return torch.optim.AdamW(params, lr=lr)
