"""DreamBooth on the tiny SDXL and FLUX.1 models, in-process: the loop trains through the family interface,
and what it leaves loads with plain diffusers (full pipeline folder, or base + ``load_lora_weights``)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from hubtools.runfolder import LORA_WEIGHTS_FILENAME
from hubtools.training import train_dreambooth
from test_training_support import IDENTIFIER, make_run, tiny_family_base

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("families-training")


def _draw(pipe, family):
    defaults = family.sampling_defaults(dict(pipe.components[family.denoiser].config))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(prompt="a photo of pkblz dog", num_inference_steps=2, height=64, width=64, output_type="np",
                 guidance_scale=defaults.guidance_scale, generator=torch.Generator().manual_seed(0),
                 **defaults.extra).images[0]
    return np.asarray(image)


@pytest.fixture(scope="module")
def trained(root):
    """Train (family, method) once per module: (run folder, TrainResult)."""
    done = {}

    def train(family_name: str, method: str):
        if (family_name, method) not in done:
            training = {"method": method, "steps": 3, "validation_every": 3, "lora_rank": 4, "lora_alpha": 8.0,
                        "learning_rate": 5e-2 if method == "lora" else 1e-3}
            cfg, run = make_run(root, f"{family_name}-{method}", base=tiny_family_base(root, family_name),
                                training=training, prior={"enabled": family_name in ("flux", "sd3", "qwen-image", "z-image", "flux2",
                                                                           "flux2-klein")})
            done[family_name, method] = run, train_dreambooth(cfg, run, progress=False)
        return done[family_name, method]

    return train


@pytest.mark.parametrize(("family_name", "method"), [("sdxl", "lora"), ("flux", "lora"), ("flux", "full"),
                                                         ("sd3", "lora"), ("sd3", "full"), ("qwen-image", "lora"),
                                                         ("z-image", "lora"), ("z-image", "full"), ("flux2", "lora"),
                                                         ("flux2-klein", "lora"), ("flux2-klein", "full")])
def test_a_family_trains_and_its_output_loads_with_plain_diffusers(root, trained, family_name, method):
    from diffusers import DiffusionPipeline

    from hubtools.families import by_name

    family = by_name(family_name)
    base = tiny_family_base(root, family_name)
    run, result = trained(family_name, method)

    written = json.loads((run / "train_result.json").read_text())
    assert written["settings"]["family"] == family_name and written["steps_done"] == 3
    assert all(np.isfinite(written["losses_tail"]))
    assert (run / "images" / "validation" / "step-000003.png").is_file()
    base_pipe = DiffusionPipeline.from_pretrained(base)
    before = _draw(base_pipe, family)
    if method == "lora":
        kohya = [f"{run.name}.safetensors"] if family.kohya_lora else []
        assert [entry.path for entry in result.weight_files] == [LORA_WEIGHTS_FILENAME, *kohya]
        base_pipe.load_lora_weights(run)  # no weight_name: diffusers must pick its own file beside the kohya one
        trained = base_pipe
    else:
        trained = DiffusionPipeline.from_pretrained(run)
        assert type(trained).__name__ == family.pipeline_class_name
        assert f"{family.denoiser}/diffusion_pytorch_model.safetensors" in {e.path for e in result.weight_files}
    after = _draw(trained, family)
    assert after.shape == (64, 64, 3) and np.isfinite(after).all()
    assert np.abs(after - before).max() > 1e-4  # the trained weights are the ones drawing


def test_the_kohya_lora_file_converts_back_to_the_same_tensors(root, trained):
    """The kohya-layout file beside the diffusers one (for AUTOMATIC1111 / ComfyUI) is the same LoRA: read
    back by diffusers' own kohya converter, it puts exactly the diffusers file's tensors into the UNet."""
    from diffusers import DiffusionPipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from hubtools.families import of_pipeline

    run, _ = trained("sdxl", "lora")  # a LoRA alpha (8) different from its rank (4)
    kohya_file = run / "sdxl-lora.safetensors"
    kohya = load_file(kohya_file)
    assert kohya and all(key.startswith(("lora_unet_", "lora_te1_", "lora_te2_")) for key in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {8.0}
    states = []
    for weights in (run / LORA_WEIGHTS_FILENAME, kohya_file):
        pipe = DiffusionPipeline.from_pretrained(tiny_family_base(root, "sdxl"))
        pipe.load_lora_weights(str(weights), adapter_name="subject")
        states.append((get_peft_model_state_dict(pipe.unet, adapter_name="subject"), _draw(pipe, of_pipeline(pipe))))
    (diffusers_state, diffusers_image), (kohya_state, kohya_image) = states
    assert diffusers_state.keys() == kohya_state.keys()
    assert all(torch.equal(diffusers_state[k], kohya_state[k]) for k in diffusers_state)
    np.testing.assert_allclose(kohya_image, diffusers_image, atol=1e-6)


@pytest.mark.parametrize("family_name", ["sd3", "qwen-image"])
def test_the_comfyui_file_applies_the_same_weights_as_diffusers(root, trained, family_name):
    """The ComfyUI copy of an SD3.5 or Qwen-Image LoRA, read by ComfyUI's rules (``transformer.<module>`` and
    (and ``text_encoder(_2).<module>``) keys as diffusers writes them, weight delta ``lora_B @ lora_A * alpha / rank``
    from the file's own ``<module>.alpha``), changes every weight exactly as diffusers' ``load_lora_weights``
    of the diffusers file does (alpha 8, rank 4: the scale ComfyUI would get wrong without the alphas)."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    run, _ = trained(family_name, "lora")
    comfy = load_file(run / f"{family_name}-lora.safetensors")
    diffusers_keys = set(load_file(run / LORA_WEIGHTS_FILENAME))
    assert set(comfy) - diffusers_keys == {k for k in comfy if k.endswith(".alpha")}
    assert {float(v) for k, v in comfy.items() if k.endswith(".alpha")} == {8.0}
    assert {k.split(".")[0] for k in comfy} == {"transformer"}

    base = DiffusionPipeline.from_pretrained(tiny_family_base(root, family_name))
    before = {"transformer": {k: v.clone() for k, v in base.transformer.state_dict().items()}}
    base.load_lora_weights(run)
    base.fuse_lora(components=["transformer"])
    base.unload_lora_weights()
    checked = 0
    for key, down in comfy.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        component, path = module.split(".", 1)
        up, alpha = comfy[f"{module}.lora_B.weight"], comfy[f"{module}.alpha"]
        expected = before[component][f"{path}.weight"] + (up @ down) * (alpha / down.shape[0])
        torch.testing.assert_close(base.components[component].state_dict()[f"{path}.weight"], expected)
        checked += 1
    assert checked == len([k for k in diffusers_keys if k.endswith(".lora_A.weight")]) > 0


def test_an_sd3_card_states_the_stability_community_licence(root, trained):
    """A base model whose card names no licence (a local folder here) gives the card SD3.5's own: the
    Stability AI Community License, with its commercial-use terms, and the pipeline, dtype and sampler."""
    from hubtools.card import render_model_card

    run, _ = trained("sd3", "lora")
    card = render_model_card(run, repo_id="tester/sd3-lora")
    assert (card.data.license, card.data.license_name) == ("other", "stabilityai-ai-community")
    assert card.data.license_link == "https://stability.ai/community-license-agreement"
    assert "Stability AI Community License" in card.content and "USD 1M" in card.content
    assert "StableDiffusion3Pipeline" in card.content and "torch.bfloat16" in card.content
    assert "flow-matching Euler" in card.content and "sd3" in card.data.tags


def test_a_qwen_image_card_counts_the_identifier_in_its_own_tokenizer_only(root, trained):
    """Qwen-Image has no CLIP tokenizer: its card says how many tokens the identifier is to its Qwen tokenizer
    and has no "CLIP token" line (an SDXL card keeps its CLIP line beside its second tokenizer's)."""
    from hubtools.card import render_model_card
    from hubtools.config import load_run_config
    from hubtools.runfolder import RunFolder
    from hubtools.runner import check_identifier_for

    cards = {}
    for family_name in ("qwen-image", "sdxl"):
        run, _ = trained(family_name, "lora")
        check_identifier_for(load_run_config(run)).write(RunFolder(run))
        cards[family_name] = render_model_card(run, repo_id=f"tester/{family_name}-lora").content
    qwen = cards["qwen-image"]
    assert "CLIP token" not in qwen and "pk + bl + z" not in qwen  # nor CLIP's split in a note
    assert re.search(r"- To `tokenizer` \(Qwen2Tokenizer\): \d+ tokens?\s+\(`p`", qwen)
    assert "tokens to tokenizer (Qwen2Tokenizer: p + k + bl + z)" in qwen
    sdxl = cards["sdxl"]
    assert re.search(rf"`{IDENTIFIER}` is \d+ CLIP tokens?\s+\(", sdxl) and "pk + bl + z" in sdxl
    assert "- To `tokenizer_2` (CLIPTokenizer" in sdxl


def _fused_transformer(root, family_name, lora) -> dict[str, torch.Tensor]:
    """The tiny base's transformer weights with ``lora`` (a file or folder, or a state dict) loaded by diffusers'
    ``load_lora_weights`` and fused in."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_family_base(root, family_name))
    pipe.load_lora_weights(lora)
    pipe.fuse_lora(components=["transformer"])
    pipe.unload_lora_weights()
    return {k: v.clone() for k, v in pipe.transformer.state_dict().items()}


def test_the_flux_kohya_file_is_sd_scripts_layout_and_applies_the_same_weights(root, trained):
    """FLUX.1's second LoRA file is sd-scripts' own layout (BFL names; q, k, v fused: downs concatenated, ups
    block-diagonal, alpha times the members): diffusers' sd-scripts converter (``load_lora_weights`` of the file)
    puts the same weights into the double blocks as the diffusers file does, and the single blocks' fused
    ``linear1`` gets exactly the diffusers file's q, k, v change by the kohya rule Forge and ComfyUI apply
    (``up @ down * alpha / rank`` on BFL's fused Linear). Alpha 8 with rank 4: a wrong scale would show."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    run, result = trained("flux", "lora")
    assert [entry.path for entry in result.weight_files] == [LORA_WEIGHTS_FILENAME, "flux-lora.safetensors"]
    kohya = load_file(run / "flux-lora.safetensors")
    modules = {key.split(".")[0] for key in kohya}
    assert modules == {f"lora_unet_double_blocks_0_{name}" for name in (
        "img_attn_qkv", "img_attn_proj", "img_mlp_0", "img_mlp_2", "txt_attn_qkv", "txt_attn_proj", "txt_mlp_0",
        "txt_mlp_2")} | {"lora_unet_single_blocks_0_linear1"}
    assert all(f"{m}.{part}" in kohya for m in modules for part in ("lora_down.weight", "lora_up.weight", "alpha"))
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    assert kohya[f"{qkv}.lora_down.weight"].shape == (12, 32) and kohya[f"{qkv}.lora_up.weight"].shape == (96, 12)
    assert float(kohya[f"{qkv}.alpha"]) == 24.0 and float(kohya["lora_unet_double_blocks_0_img_mlp_0.alpha"]) == 8.0
    linear1 = "lora_unet_single_blocks_0_linear1"  # q, k, v and the MLP input (not adapted: zeros), 32 + 32 + 32 + 128
    assert kohya[f"{linear1}.lora_up.weight"].shape == (224, 16) and float(kohya[f"{linear1}.alpha"]) == 32.0

    before = {k: v.clone() for k, v in DiffusionPipeline.from_pretrained(
        tiny_family_base(root, "flux")).transformer.state_dict().items()}
    expected = _fused_transformer(root, "flux", run)  # the diffusers file
    double = {k: v for k, v in kohya.items() if not k.startswith("lora_unet_single_blocks_")}
    through_kohya = _fused_transformer(root, "flux", double)  # diffusers' own sd-scripts converter
    compared = [k for k in expected if not k.startswith("single_transformer_blocks.")]
    for key in compared:
        torch.testing.assert_close(through_kohya[key], expected[key])
    assert sum(not torch.equal(expected[k], before[k]) for k in compared) == 12  # the double block's 12 adapted Linears

    block = "single_transformer_blocks.0"
    parts = [f"{block}.attn.to_q.weight", f"{block}.attn.to_k.weight", f"{block}.attn.to_v.weight",
             f"{block}.proj_mlp.weight"]
    down, up = kohya[f"{linear1}.lora_down.weight"], kohya[f"{linear1}.lora_up.weight"]
    bfl_linear1 = torch.cat([before[p] for p in parts]) + up @ down * (kohya[f"{linear1}.alpha"] / down.shape[0])
    torch.testing.assert_close(bfl_linear1, torch.cat([expected[p] for p in parts]))
    assert not torch.equal(expected[parts[0]], before[parts[0]])

    from hubtools.card import render_model_card

    card = render_model_card(run, repo_id="tester/flux-lora").content
    assert "| `flux-lora.safetensors` |" in card
    assert ("`flux-lora.safetensors` is the same LoRA in sd-scripts' (kohya's) FLUX.1 layout: BFL module names, "
            "q, k and v fused, for Forge, ComfyUI, AUTOMATIC1111-style loaders and kohya's sd-scripts") in card


def test_the_flux_kohya_file_carries_a_text_encoder_lora(root, tmp_path):
    """A FLUX.1 LoRA of the CLIP text encoder (``--train-text-encoder``; random, alpha 8, rank 4) is ``lora_te1_*``
    in the sd-scripts file, and diffusers' sd-scripts converter (``FluxPipeline.lora_state_dict``, what
    ``load_lora_weights`` reads through) gives every module the diffusers file's weight change."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import convert_all_state_dict_to_peft
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import load_file

    from hubtools.families import by_name

    family = by_name("flux")
    pipe = DiffusionPipeline.from_pretrained(tiny_family_base(root, "flux"))
    with torch.random.fork_rng():
        torch.manual_seed(0)  # peft's own injection: transformers' add_adapter wants a newer peft than this one
        config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                            target_modules=list(family.text_encoder_lora_targets))
        inject_adapter_in_model(config, pipe.text_encoder)
    pipe.text_encoder.peft_config = {"default": config}
    saved = family.save_lora(tmp_path, LORA_WEIGHTS_FILENAME, {"transformer": None, "text_encoder": pipe.text_encoder})
    kohya = family.kohya_lora_state(saved)
    assert kohya and all(key.startswith("lora_te1_text_model_encoder_layers_") for key in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {8.0}

    diffusers_file = load_file(saved)
    converted = type(pipe).lora_state_dict(kohya)
    converted = convert_all_state_dict_to_peft(converted[0] if isinstance(converted, tuple) else converted)
    # sd-scripts (and A1111, Forge, ComfyUI) name CLIP's modules text_model.encoder...: transformers 5 has no text_model
    modules = [k[: -len(".lora_A.weight")] for k in diffusers_file if k.endswith(".lora_A.weight")]
    named = {m: m.replace("text_encoder.", "text_encoder.text_model.", 1) for m in modules}
    assert len(modules) == 2 * 4 and sorted(k for k in converted if k.endswith(".lora_A.weight")) == sorted(
        f"{m}.lora_A.weight" for m in named.values())
    for module, name in named.items():
        delta = diffusers_file[f"{module}.lora_B.weight"] @ diffusers_file[f"{module}.lora_A.weight"] * (8 / 4)
        torch.testing.assert_close(converted[f"{name}.lora_B.weight"] @ converted[f"{name}.lora_A.weight"], delta)


def test_the_z_image_comfyui_file_applies_the_same_weights(root, trained):
    """Z-Image's ComfyUI copy (``diffusion_model.<module>`` keys, each module's ``alpha``: ComfyUI's Lumina2
    LoRA loader maps these names onto its fused qkv and scales by ``alpha / rank``) changes every weight as the
    diffusers file does, by that rule and by diffusers' own Z-Image loader (``load_lora_weights`` of the copy)."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    run, result = trained("z-image", "lora")
    assert [entry.path for entry in result.weight_files] == [LORA_WEIGHTS_FILENAME, "z-image-lora.safetensors"]
    comfy = load_file(run / "z-image-lora.safetensors")
    diffusers_file = load_file(run / LORA_WEIGHTS_FILENAME)
    assert {k.split(".", 1)[0] for k in comfy} == {"diffusion_model"}
    assert {k.replace("diffusion_model.", "transformer.", 1) for k in comfy if not k.endswith(".alpha")} == set(diffusers_file)
    assert {float(v) for k, v in comfy.items() if k.endswith(".alpha")} == {8.0}

    before = {k: v.clone() for k, v in DiffusionPipeline.from_pretrained(
        tiny_family_base(root, "z-image")).transformer.state_dict().items()}
    expected = _fused_transformer(root, "z-image", run)
    through_diffusers = _fused_transformer(root, "z-image", comfy)  # diffusers' Z-Image converter reads the copy
    assert any(not torch.equal(expected[k], before[k]) for k in expected)
    for key in expected:
        torch.testing.assert_close(through_diffusers[key], expected[key])
    checked = 0
    for key, down in comfy.items():
        if key.endswith(".lora_A.weight"):
            module = key[len("diffusion_model."): -len(".lora_A.weight")]
            up, alpha = comfy[f"diffusion_model.{module}.lora_B.weight"], comfy[f"diffusion_model.{module}.alpha"]
            torch.testing.assert_close(expected[f"{module}.weight"],
                                       before[f"{module}.weight"] + (up @ down) * (alpha / down.shape[0]))
            checked += 1
    assert checked == len([k for k in diffusers_file if k.endswith(".lora_A.weight")]) > 0
