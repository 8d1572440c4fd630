"""LoRA files for other tools, shared by families: ComfyUI (and Forge) read diffusers' own key layout for
the transformer families (``transformer.<module>.lora_A.weight`` / ``lora_B.weight``), scaled by a per-module
``<module>.alpha`` when the file has one and by 1 when not; diffusers keeps alpha in the file's metadata only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def with_module_alphas(diffusers_file: Path, *, prefixes: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """A diffusers LoRA file's tensors with ``<module>.alpha`` beside each module's ``lora_A``/``lora_B`` (the
    adapter's alpha from the file's metadata; its rank when the metadata has none); ``prefixes`` renames the
    components' key prefixes (Z-Image: ``transformer`` -> ``diffusion_model``, the checkpoint's own)."""
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
    if prefixes:
        out = {prefixes.get(key.split(".", 1)[0], key.split(".", 1)[0]) + "." + key.split(".", 1)[1]: value
               for key, value in out.items()}
    return out


def adapter_alphas(diffusers_file: Path) -> dict[str, float]:
    """``{component: lora_alpha}`` from a diffusers LoRA file's adapter metadata (empty when it has none)."""
    import json

    from safetensors import safe_open

    with safe_open(str(diffusers_file), "pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get("lora_adapter_metadata", "{}"))
    return {key[: -len(".lora_alpha")]: float(value) for key, value in metadata.items()
            if key.endswith(".lora_alpha") and value is not None}


# sd-scripts' (kohya's) FLUX.1 LoRA modules, by Black Forest Labs' module names, and the diffusers modules each one
# is: (diffusers module, its rows as a multiple of the group's first module's rows). A group of several is one
# fused Linear in BFL's model (q, k and v; the single blocks' q, k, v and MLP input).
def _flux_double_block(i: int) -> dict[str, tuple[tuple[str, int], ...]]:
    block = f"transformer_blocks.{i}"
    return {
        f"double_blocks_{i}_img_attn_qkv": ((f"{block}.attn.to_q", 1), (f"{block}.attn.to_k", 1), (f"{block}.attn.to_v", 1)),
        f"double_blocks_{i}_img_attn_proj": ((f"{block}.attn.to_out.0", 1),),
        f"double_blocks_{i}_img_mlp_0": ((f"{block}.ff.net.0.proj", 1),),
        f"double_blocks_{i}_img_mlp_2": ((f"{block}.ff.net.2", 1),),
        f"double_blocks_{i}_img_mod_lin": ((f"{block}.norm1.linear", 1),),
        f"double_blocks_{i}_txt_attn_qkv": ((f"{block}.attn.add_q_proj", 1), (f"{block}.attn.add_k_proj", 1),
                                            (f"{block}.attn.add_v_proj", 1)),
        f"double_blocks_{i}_txt_attn_proj": ((f"{block}.attn.to_add_out", 1),),
        f"double_blocks_{i}_txt_mlp_0": ((f"{block}.ff_context.net.0.proj", 1),),
        f"double_blocks_{i}_txt_mlp_2": ((f"{block}.ff_context.net.2", 1),),
        f"double_blocks_{i}_txt_mod_lin": ((f"{block}.norm1_context.linear", 1),),
    }


FLUX_MLP_RATIO = 4  # FLUX.1's single blocks: the MLP input is 4x the attention width


def _flux_single_block(i: int) -> dict[str, tuple[tuple[str, int], ...]]:
    block = f"single_transformer_blocks.{i}"
    return {
        f"single_blocks_{i}_linear1": ((f"{block}.attn.to_q", 1), (f"{block}.attn.to_k", 1), (f"{block}.attn.to_v", 1),
                                       (f"{block}.proj_mlp", FLUX_MLP_RATIO)),
        f"single_blocks_{i}_linear2": ((f"{block}.proj_out", 1),),
        f"single_blocks_{i}_modulation_lin": ((f"{block}.norm.linear", 1),),
    }


_FLUX_OUTER = {
    "img_in": (("x_embedder", 1),), "txt_in": (("context_embedder", 1),),
    "time_in_in_layer": (("time_text_embed.timestep_embedder.linear_1", 1),),
    "time_in_out_layer": (("time_text_embed.timestep_embedder.linear_2", 1),),
    "guidance_in_in_layer": (("time_text_embed.guidance_embedder.linear_1", 1),),
    "guidance_in_out_layer": (("time_text_embed.guidance_embedder.linear_2", 1),),
    "vector_in_in_layer": (("time_text_embed.text_embedder.linear_1", 1),),
    "vector_in_out_layer": (("time_text_embed.text_embedder.linear_2", 1),),
    "final_layer_linear": (("proj_out", 1),),
    # BFL's final modulation puts (shift, scale) where diffusers' norm_out puts (scale, shift)
    "final_layer_adaLN_modulation_1": (("norm_out.linear", 1),),
}
_SWAPPED_HALVES = {"final_layer_adaLN_modulation_1"}


def sd_scripts_flux_state(diffusers_file: Path) -> dict[str, torch.Tensor]:
    """A FLUX.1 diffusers LoRA file in sd-scripts' own FLUX LoRA layout, which Forge, ComfyUI and
    AUTOMATIC1111-style loaders read: ``lora_unet_<BFL module>.lora_down.weight`` / ``.lora_up.weight`` /
    ``.alpha``, where BFL's model fuses several of diffusers' modules into one Linear (q, k and v; the single
    blocks' q, k, v and MLP input). A fused module is written as sd-scripts' converter writes one: the members'
    down weights concatenated (rank ``n * r``), their up weights block-diagonal, alpha ``n * alpha`` so that
    ``alpha / rank`` is the adapter's own scale; a member the adapter left out (the single blocks' MLP input)
    gets zero weights. The CLIP text encoder's LoRA, when it trained one, is ``lora_te1_*`` (kohya's CLIP names).
    Every ``.alpha`` carries the adapter's alpha (its rank when the metadata has none), so loaders that read
    ``alpha / rank`` apply exactly the diffusers file's weights."""
    import torch
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
    from safetensors.torch import load_file

    state = load_file(str(diffusers_file))
    alphas = adapter_alphas(diffusers_file)
    prefix = "transformer."
    modules = {key[len(prefix): -len(".lora_A.weight")] for key in state
               if key.startswith(prefix) and key.endswith(".lora_A.weight")}
    blocks = sorted({int(m.split(".")[1]) for m in modules if m.startswith("transformer_blocks.")}, key=int)
    singles = sorted({int(m.split(".")[1]) for m in modules if m.startswith("single_transformer_blocks.")}, key=int)
    layout: dict[str, tuple[tuple[str, int], ...]] = {}
    for i in blocks:
        layout.update(_flux_double_block(i))
    for i in singles:
        layout.update(_flux_single_block(i))
    layout.update(_FLUX_OUTER)

    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, members in layout.items():
        present = [module for module, _ in members if module in modules]
        if not present:
            continue
        downs = {m: state[f"{prefix}{m}.lora_A.weight"] for m in present}
        ups = {m: state[f"{prefix}{m}.lora_B.weight"] for m in present}
        first = next(iter(downs.values()))
        rank, columns = first.shape
        unit = ups[present[0]].shape[0] // dict(members)[present[0]]
        rows = [ups[m].shape[0] if m in ups else width * unit for m, width in members]
        down = torch.zeros((rank * len(members), columns), dtype=first.dtype)
        up = torch.zeros((sum(rows), rank * len(members)), dtype=first.dtype)
        start = 0
        for j, ((module, _), height) in enumerate(zip(members, rows)):
            if module in downs:
                down[j * rank:(j + 1) * rank] = downs[module]
                up[start:start + height, j * rank:(j + 1) * rank] = ups[module]
            start += height
        if name in _SWAPPED_HALVES:
            shift, scale = up.chunk(2, dim=0)
            up = torch.cat([scale, shift], dim=0)
        alpha = alphas.get("transformer", float(rank))
        out[f"lora_unet_{name}.lora_down.weight"] = down.contiguous()
        out[f"lora_unet_{name}.lora_up.weight"] = up.contiguous()
        out[f"lora_unet_{name}.alpha"] = torch.tensor(alpha * len(members))
        used.update(present)
    left = sorted(modules - used)
    if left:
        raise ValueError(f"no sd-scripts FLUX.1 name for the LoRA modules {', '.join(left[:3])}")

    # CLIP's modules as sd-scripts and the loaders name them (``text_model.encoder...``; transformers 5's
    # CLIPTextModel has no ``text_model`` level)
    text = {key if key.startswith("text_encoder.text_model.") else key.replace("text_encoder.", "text_encoder.text_model.", 1):
            value for key, value in state.items() if key.startswith("text_encoder.")}
    if text:
        kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(text))
        alpha = alphas.get("text_encoder")
        for key in kohya:
            if key.endswith(".alpha") and alpha is not None:
                kohya[key] = torch.tensor(alpha)
        out.update(kohya)
    return out
