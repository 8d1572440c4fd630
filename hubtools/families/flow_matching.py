"""What the flow-matching families (FLUX.1, SD 3.5, Qwen-Image, Z-Image) share: the flow-matching Euler
scheduler for training, validation and the grids, and LoRA as the default method (a full fine-tune of their
real models needs far more memory than one GPU has)."""

from __future__ import annotations

from typing import Any, ClassVar

from hubtools.families.base import Family


class FlowMatchingFamily(Family):
    """A family trained and sampled with ``FlowMatchEulerDiscreteScheduler``; ``training_shift`` overrides the
    scheduler config's shift during training where the family's script does (None: the config's own)."""

    training_shift: ClassVar[float | None] = None

    def config_defaults(self, denoiser_config: dict[str, Any]) -> dict[str, Any]:
        return {**super().config_defaults(denoiser_config), "training.method": "lora"}

    def sampling_scheduler(self, name: str, scheduler_config):
        """The flow-matching Euler scheduler the model was trained for, whatever the name."""
        return self.validation_scheduler(scheduler_config)

    def sampling_scheduler_label(self, name: str) -> str:
        return "flow-matching Euler"

    def validation_scheduler(self, scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)

    def training_scheduler(self, scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        shift = {} if self.training_shift is None else {"shift": self.training_shift}
        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config, **shift)
