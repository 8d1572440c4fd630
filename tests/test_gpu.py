"""The CUDA paths of the trainer and sampler, on the tiny model: mixed precision with fp32 master weights,
peak memory recorded, the memory profile chosen from free GPU memory, and class images in half precision.

Skipped where no CUDA device is visible (the CI machines); run them on a GPU box with
``python -m pytest -m gpu``.
"""

from __future__ import annotations

import json

import pytest
import torch

from hubtools.training import train_dreambooth
from test_training_support import make_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _mixed_precision() -> str:
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_mixed_precision_training_on_cuda(tmp_path, method):
    precision = _mixed_precision()
    training = {"method": method, "steps": 8, "device": "cuda", "mixed_precision": precision,
                "checkpoint_every": 4, "validation_every": 4}
    if method == "lora":
        training.update(lora_rank=4, learning_rate=1e-3)
    cfg, run = make_run(tmp_path, method, training=training)
    result = train_dreambooth(cfg, run, progress=False)

    written = json.loads((run / "train_result.json").read_text())
    assert written["device"].startswith("cuda") and written["mixed_precision"] == precision
    assert written["peak_memory_bytes"] and written["peak_memory_bytes"] > 0
    assert all(loss == loss and abs(loss) < 1e3 for loss in result.losses_tail)  # finite: no NaN, no blow-up
    if method == "full":
        # trainable weights are kept and saved in fp32 (no "Attempting to unscale FP16 gradients")
        from safetensors import safe_open

        with safe_open(run / "unet" / "diffusion_pytorch_model.safetensors", "pt") as weights:
            assert {weights.get_tensor(key).dtype for key in list(weights.keys())[:20]} == {torch.float32}
    assert (run / "images" / "validation" / "step-000008.png").is_file()


def test_memory_auto_sizes_from_free_gpu_memory(tmp_path):
    from hubtools.families import by_name
    from hubtools.training.memory import free_gpu_bytes

    PROFILES = by_name("sd").memory_profiles

    cfg, run = make_run(tmp_path, training={"steps": 2, "device": "cuda", "memory": "auto"})
    result = train_dreambooth(cfg, run, progress=False)
    free_gib = free_gpu_bytes(torch.device("cuda")) / 2**30
    expected = next((p.name for p in PROFILES if free_gib >= p.min_free_gib), PROFILES[-1].name)
    assert result.memory_profile == expected
    assert "GiB free GPU memory" in json.loads((run / "train_result.json").read_text())["memory_profile_reason"]


def test_sampling_on_cuda_matches_its_own_rerun(tmp_path):
    from PIL import Image

    from hubtools.sample import render_samples

    cfg, run = make_run(tmp_path, training={"steps": 2, "device": "cuda", "mixed_precision": _mixed_precision()},
                        prior={"enabled": False})
    train_dreambooth(cfg, run, progress=False)
    first = render_samples(run, device=torch.device("cuda"), progress=False)
    import numpy as np

    grid = first.grids[0]
    before = np.asarray(Image.open(grid).convert("RGB"), dtype=np.int16)
    render_samples(run, device=torch.device("cuda"), progress=False)
    after = np.asarray(Image.open(grid).convert("RGB"), dtype=np.int16)
    # fixed seeds: the same run gives the same grids (GPU kernels may differ in the last bit, not more)
    assert np.abs(after - before).mean() < 1.0
