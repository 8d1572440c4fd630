"""Which device a stage runs on, and the dtype argument ``from_pretrained`` wants on this install."""

from __future__ import annotations

import torch

from hubtools.errors import ConfigError


def resolve_device(preference: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one; asking for ``cuda`` without one is a user error."""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible: use --device cpu (slow for a real model) "
            "or try `hubtools demo`, which needs no GPU"
        )
    return torch.device("cpu")


def dtype_kwargs(library: str, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype argument under the name this install's ``library`` wants.

    diffusers 0.40 and transformers 4.56 renamed ``torch_dtype`` to ``dtype`` and warn on the old name;
    older releases ignore the new one, so the name follows the installed version.
    """
    from importlib.metadata import version

    from packaging.version import Version

    renamed_in = {"diffusers": "0.40", "transformers": "4.56"}[library]
    name = "dtype" if Version(version(library)) >= Version(renamed_in) else "torch_dtype"
    return {name: dtype}
