"""DreamBooth on the tiny SDXL and FLUX.1 models, in-process: the loop trains through the family interface,
and what it leaves loads with plain diffusers (full pipeline folder, or base + ``load_lora_weights``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hubtools.runfolder import LORA_WEIGHTS_FILENAME
from hubtools.training import train_dreambooth
from test_training_support import make_run, single_thread_torch, tiny_family_base


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from single_thread_torch()


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
