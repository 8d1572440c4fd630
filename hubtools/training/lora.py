"""LoRA adapters (peft) on the UNet and optionally the text encoder, saved in the diffusers LoRA format
that ``pipe.load_lora_weights()`` reads, with the adapter metadata (alpha != rank is otherwise lost)."""

from __future__ import annotations

from pathlib import Path

import torch

from hubtools.errors import ConfigError
from hubtools.runfolder import LORA_WEIGHTS_FILENAME

UNET_TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]


def add_lora_adapters(unet, text_encoder, *, rank: int, alpha: float, train_text_encoder: bool) -> None:
    """Freeze the base weights and add trainable LoRA layers (kept in fp32 for mixed precision)."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                target_modules=UNET_TARGET_MODULES))
    models = [unet]
    if train_text_encoder:
        try:
            text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                                target_modules=TEXT_ENCODER_TARGET_MODULES))
        except ValueError as error:  # transformers refuses peft versions it does not support
            if "PEFT" not in str(error):
                raise
            import peft

            raise ConfigError(
                f"LoRA on the text encoder needs a newer peft than {peft.__version__} for this transformers "
                f"({str(error).strip().rsplit(' ', 1)[-1]}): `pip install -U peft`, or train the UNet only "
                "(--freeze-text-encoder)"
            ) from None
        models.append(text_encoder)
    cast_training_params(models, dtype=torch.float32)


def save_lora(folder: Path, unet, text_encoder=None) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` (text-encoder layers too when it was trained)."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    extra = {}
    if text_encoder is not None and getattr(text_encoder, "peft_config", None):
        extra = {"text_encoder_lora_layers": get_peft_model_state_dict(text_encoder),
                 "text_encoder_lora_adapter_metadata": text_encoder.peft_config["default"].to_dict()}
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        weight_name=LORA_WEIGHTS_FILENAME, safe_serialization=True, **extra,
    )
    return Path(folder) / LORA_WEIGHTS_FILENAME


def load_lora_state(folder: Path, unet, text_encoder=None) -> None:
    """Put the LoRA weights saved by ``save_lora`` back into adapters added by ``add_lora_adapters``."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(Path(folder) / LORA_WEIGHTS_FILENAME)
    for prefix, model in [("unet.", unet), ("text_encoder.", text_encoder)]:
        part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if part and model is not None:
            result = set_peft_model_state_dict(model, part, adapter_name="default")
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"LoRA checkpoint has keys the model lacks: {result.unexpected_keys[:3]}")
