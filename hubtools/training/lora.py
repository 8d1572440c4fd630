"""LoRA adapters (peft) on the denoiser and optionally the text encoders, saved in the diffusers LoRA format
that ``pipe.load_lora_weights()`` reads, with the adapter metadata (alpha != rank is otherwise lost)."""

from __future__ import annotations

from pathlib import Path

import torch

from hubtools.errors import ConfigError
from hubtools.runfolder import LORA_WEIGHTS_FILENAME


def add_lora_adapters(denoiser, text_encoders: dict, *, rank: int, alpha: float, denoiser_targets,
                      text_encoder_targets) -> None:
    """Freeze the base weights and add trainable LoRA layers (kept in fp32 for mixed precision) to the
    denoiser and to each of ``text_encoders`` (those that train), in that order: the initial weights come
    from the global RNG."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                    target_modules=list(denoiser_targets)))
    models = [denoiser]
    for text_encoder in text_encoders.values():
        try:
            text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                                target_modules=list(text_encoder_targets)))
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


def save_lora(folder: Path, family, adapted: dict) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` of the adapted components (denoiser first; text
    encoders too when they were trained) in the diffusers LoRA format of the family's pipeline."""
    return family.save_lora(folder, LORA_WEIGHTS_FILENAME, adapted)


def load_lora_state(folder: Path, adapted: dict) -> None:
    """Put the LoRA weights saved by ``save_lora`` back into adapters added by ``add_lora_adapters``."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(Path(folder) / LORA_WEIGHTS_FILENAME)
    for name, model in adapted.items():
        prefix = f"{name}."
        part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if part and model is not None:
            result = set_peft_model_state_dict(model, part, adapter_name="default")
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"LoRA checkpoint has keys the model lacks: {result.unexpected_keys[:3]}")
