"""The base model set up for training: which parts train and in which dtype (the full UNet, or LoRA
adapters on frozen weights; the text encoder too, when asked), then the optimizer and LR schedule over the
trainable weights, handed to accelerate with the hooks that make checkpoints hold only those weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hubtools.config import RunConfig, TrainingConfig
from hubtools.errors import ConfigError
from hubtools.pipelines import BaseModel, load_base_model
from hubtools.training import checkpoints as ckpt

if TYPE_CHECKING:
    from hubtools.prior import ClassImages

_SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class TrainableModels:
    """The base pipeline set up for training: adapters added, frozen parts cast to the weight dtype."""

    base: BaseModel
    class_images: ClassImages | None  # rendered by the untouched base; None without prior preservation
    noise_scheduler: Any  # diffusers.DDPMScheduler
    lora: bool
    train_text_encoder: bool


@dataclass
class Optimization:
    """What each optimizer step uses: the trainable models, their parameters, optimizer and LR schedule."""

    models: list[torch.nn.Module]  # as they were before accelerate wrapped them; accumulate() takes these
    params: list[torch.nn.Parameter]
    optimizer: Any  # prepared by accelerate
    lr_scheduler: Any  # prepared by accelerate
    unet: Any  # prepared (DDP-wrapped under several processes)
    text_encoder: Any  # prepared when trained, else the frozen one


def load_trainable_models(cfg: RunConfig, accelerator, *, seed: int, weight_dtype: torch.dtype, token: str | None,
                          progress: bool) -> TrainableModels:
    """The base model, its class images for prior preservation, then its parts set up for training."""
    from accelerate.utils import set_seed

    device = accelerator.device
    set_seed(seed)  # LoRA's initial weights come from the global RNG
    base = load_base_model(cfg.model, device=device, dtype=torch.float32, token=token)
    missing = [name for name in _SD_PARTS if getattr(base.pipeline, name, None) is None]
    if missing:
        raise ConfigError(f"base model {base.model_id} has no {', '.join(missing)}: use a Stable Diffusion 1.x "
                          "diffusers pipeline")
    class_images = None
    if cfg.prior.enabled:  # before any adapter or cast: class images come from the untouched base
        from hubtools.prior import ensure_class_images

        with accelerator.main_process_first():
            class_images = ensure_class_images(cfg, base, device=device,
                                               progress=progress and accelerator.is_main_process)

    from diffusers import DDPMScheduler

    models = TrainableModels(base, class_images, DDPMScheduler.from_config(base.pipeline.scheduler.config),
                             lora=cfg.training.method == "lora", train_text_encoder=cfg.training.train_text_encoder)
    _set_up_for_training(models, cfg.training, device, weight_dtype)
    return models


def _set_up_for_training(models: TrainableModels, training: TrainingConfig, device: torch.device,
                         weight_dtype: torch.dtype) -> None:
    """Freeze and cast what is not trained; add LoRA adapters, or unfreeze the full model."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet, vae, text_encoder = models.base.unet, models.base.vae, models.base.text_encoder
    train_text_encoder = models.train_text_encoder
    vae.requires_grad_(False)
    vae.to(device, dtype=weight_dtype)
    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels)
    if models.lora:
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


def prepare_optimization(cfg: RunConfig, models: TrainableModels, accelerator) -> Optimization:
    """Optimizer and LR schedule for the trainable weights, all handed to ``accelerator.prepare``, then the
    checkpoint hooks registered."""
    from diffusers.optimization import get_scheduler

    training = cfg.training
    trainable_models = [models.base.unet] + ([models.base.text_encoder] if models.train_text_encoder else [])
    params = [p for model in trainable_models for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, lr=cfg.learning_rate, use_8bit=training.use_8bit_adam)
    # accelerate steps a prepared scheduler once per process per optimizer step
    lr_scheduler = get_scheduler(training.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=training.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=training.steps * accelerator.num_processes)
    prepared = accelerator.prepare(*trainable_models, optimizer, lr_scheduler)
    ckpt.register_weight_hooks(accelerator, models.base.unet, models.base.text_encoder if models.train_text_encoder else None,
                               lora=models.lora)
    return Optimization(trainable_models, params, optimizer=prepared[-2], lr_scheduler=prepared[-1], unet=prepared[0],
                        text_encoder=prepared[1] if models.train_text_encoder else models.base.text_encoder)


def _make_optimizer(params, *, lr: float, use_8bit: bool):
    if use_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("8-bit Adam needs bitsandbytes: pip install 'hubtools[bnb]', or set training.use_8bit_adam = false") from None
        return bnb.optim.AdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)
