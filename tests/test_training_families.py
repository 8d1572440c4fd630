"""DreamBooth on the tiny SDXL and FLUX.1 models, in-process: the loop trains through the family interface,
and what it leaves loads with plain diffusers (full pipeline folder, or base + ``load_lora_weights``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hubtools.models import LORA_WEIGHTS_FILENAME
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


@pytest.mark.parametrize(("family_name", "method"), [("sdxl", "lora"), ("flux", "lora"), ("flux", "full")])
def test_a_family_trains_and_its_output_loads_with_plain_diffusers(root, family_name, method):
    from diffusers import DiffusionPipeline

    from hubtools.families import by_name

    family = by_name(family_name)
    base = tiny_family_base(root, family_name)
    training = {"method": method, "steps": 3, "validation_every": 3, "learning_rate": 5e-2 if method == "lora" else 1e-3}
    cfg, run = make_run(root, f"{family_name}-{method}", base=base, training=training,
                        prior={"enabled": family_name == "flux"})
    result = train_dreambooth(cfg, run, progress=False)

    written = json.loads((run / "train_result.json").read_text())
    assert written["settings"]["family"] == family_name and written["steps_done"] == 3
    assert all(np.isfinite(written["losses_tail"]))
    assert (run / "images" / "validation" / "step-000003.png").is_file()
    base_pipe = DiffusionPipeline.from_pretrained(base)
    before = _draw(base_pipe, family)
    if method == "lora":
        assert [entry["path"] for entry in result.weight_files] == [LORA_WEIGHTS_FILENAME]
        base_pipe.load_lora_weights(run, weight_name=LORA_WEIGHTS_FILENAME)
        trained = base_pipe
    else:
        trained = DiffusionPipeline.from_pretrained(run)
        assert type(trained).__name__ == family.pipeline_class_name
        assert f"{family.denoiser}/diffusion_pytorch_model.safetensors" in {e["path"] for e in result.weight_files}
    after = _draw(trained, family)
    assert after.shape == (64, 64, 3) and np.isfinite(after).all()
    assert np.abs(after - before).max() > 1e-4  # the trained weights are the ones drawing
