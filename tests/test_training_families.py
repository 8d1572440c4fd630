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
    image = pipe("a photo of pkblz dog", num_inference_steps=2, height=64, width=64, output_type="np",
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
                                training=training, prior={"enabled": family_name == "flux"})
            done[family_name, method] = run, train_dreambooth(cfg, run, progress=False)
        return done[family_name, method]

    return train


@pytest.mark.parametrize(("family_name", "method"), [("sdxl", "lora"), ("flux", "lora"), ("flux", "full")])
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
