"""LoRA files for other tools, shared by families: ComfyUI (and Forge) read diffusers' own key layout for
the transformer families (``transformer.<module>.lora_A.weight`` / ``lora_B.weight``), scaled by a per-module
``<module>.alpha`` when the file has one and by 1 when not; diffusers keeps alpha in the file's metadata only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def with_module_alphas(diffusers_file: Path) -> dict[str, torch.Tensor]:
    """A diffusers LoRA file's tensors with ``<module>.alpha`` beside each module's ``lora_A``/``lora_B`` (the
    adapter's alpha from the file's metadata; its rank when the metadata has none)."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(diffusers_file), "pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get("lora_adapter_metadata", "{}"))
    state = load_file(str(diffusers_file))
    out = dict(state)
    for key, down in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        alpha = metadata.get(f"{module.split('.', 1)[0]}.lora_alpha")
        out[f"{module}.alpha"] = torch.tensor(float(alpha if alpha is not None else down.shape[0]))
    return out
