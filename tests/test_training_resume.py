"""kill -9 in the middle of a run, then resume: the same final weights as a run never interrupted.

The run that is killed is a child process; the uninterrupted run and the resume are trained in the test's own
process (a different process from the killed one, as a user's next command is), which spares two interpreter
start-ups per case."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from hubtools.config import load_run_config
from hubtools.runfolder import LORA_WEIGHTS_FILENAME
from hubtools.training import train_dreambooth
from test_training_support import make_bucketed_run, make_run, subprocess_env, tiny_family_base

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A child trainer killed (SIGKILL) as checkpoint STEP is about to be renamed into place: its whole state is
# then in the temp folder only.
KILLED_TRAINER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    import torch
    torch.set_num_threads(1)
    from hubtools.config import load_run_config
    from hubtools.training import checkpoints, train_dreambooth

    step, run = int(sys.argv[1]), Path(sys.argv[2])
    doomed = checkpoints.checkpoint_name(step)
    publish = checkpoints.replace_dir

    def publish_or_die(tmp, final):
        if final.name == doomed:
            os.kill(os.getpid(), signal.SIGKILL)
        publish(tmp, final)

    checkpoints.replace_dir = publish_or_die
    train_dreambooth(load_run_config(run), run, progress=False)
""")

CASES = {
    "full": ("sd", {"method": "full", "lr_scheduler": "cosine", "lr_warmup_steps": 2}, {},
             "unet/diffusion_pytorch_model.safetensors"),
    # SD3.5: the scheduler-table timesteps and preconditioned target replay exactly too; full, with class images
    "sd3-full": ("sd3", {"method": "full", "learning_rate": 1e-3}, {}, "transformer/diffusion_pytorch_model.safetensors"),
    # Qwen-Image: caption masks of different lengths and packed latents replay exactly too
    "qwen-image-lora": ("qwen-image", {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-2}, {},
                        LORA_WEIGHTS_FILENAME),
    # Z-Image: uniform picks from the scheduler's table, masked Qwen captions, with class images
    "z-image-lora": ("z-image", {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-2}, {},
                     LORA_WEIGHTS_FILENAME),
    # FLUX.2 [dev]: patchified, batch-norm-normalised latents and the guidance embedding, with class images
    "flux2-lora": ("flux2", {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-2}, {},
                   LORA_WEIGHTS_FILENAME),
    # FLUX.2 [klein]: a full fine-tune (Qwen3 captions, no guidance embedding), with class images
    "flux2-klein-full": ("flux2-klein", {"method": "full", "learning_rate": 1e-3}, {},
                         "transformer/diffusion_pytorch_model.safetensors"),
    # SD LoRA with aspect-ratio buckets (portrait, landscape, square), class images per bucket, caption dropout
    # and shuffling
    "buckets": ("sd", {"method": "lora", "lora_rank": 4, "learning_rate": 1e-2, "caption_dropout": 0.3,
                       "shuffle_caption_parts": True}, {"num_class_images": 3}, LORA_WEIGHTS_FILENAME),
    # the same on SDXL (time ids per photo), a full fine-tune with both text encoders training (the multi-encoder
    # checkpoint hooks)
    "buckets-sdxl-full": ("sdxl", {"method": "full", "train_text_encoder": True, "caption_dropout": 0.3},
                          {"enabled": False}, "text_encoder_2/model.safetensors"),
    # and on FLUX.1 (positional ids per bucket; flow matching's logit-normal draws replay exactly too), with
    # class images
    "buckets-flux-lora": ("flux", {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-2,
                                   "caption_dropout": 0.3}, {"num_class_images": 3}, LORA_WEIGHTS_FILENAME),
}
SIDECARS = {"portrait.jpg": "pkblz dog, on a sofa, red collar", "landscape.jpg": "pkblz dog, running, beach, sunset"}


def _train_killed_at(script, step, run):
    return subprocess.run([sys.executable, str(script), str(step), str(run)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, case):
    family, training, prior, weights = CASES[case]
    training = {**training, "steps": 9, "checkpoint_every": 3, "keep_checkpoints": 3}
    script = tmp_path / "trainer.py"
    script.write_text(KILLED_TRAINER)
    base = tiny_family_base(tmp_path, family)
    if case.startswith("buckets"):
        _, reference = make_bucketed_run(tmp_path, "reference", family=family, training=training, prior=prior,
                                         captions=SIDECARS)
        _, crashed = make_bucketed_run(tmp_path, "crashed", family=family, training=training, prior=prior,
                                       captions=SIDECARS)
    else:
        _, reference = make_run(tmp_path, "reference", training=training, prior=prior, base=base)
        _, crashed = make_run(tmp_path, "crashed", training=training, prior=prior, base=base)

    train_dreambooth(load_run_config(reference), reference, progress=False)

    killed = _train_killed_at(script, 6, crashed)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = crashed / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [".tmp-checkpoint-000006", "checkpoint-000003"]
    assert not (crashed / "train_result.json").exists() and not (crashed / weights).exists()

    train_dreambooth(load_run_config(crashed), crashed, resume=True, progress=False)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-000003", "checkpoint-000006", "checkpoint-000009"]

    expected, actual = load_file(reference / weights), load_file(crashed / weights)
    assert expected.keys() == actual.keys() and expected
    difference = max((expected[k] - actual[k]).abs().max().item() for k in expected)
    assert difference == 0.0
    # and the run really learnt something, so equality is not the trivial kind
    base_or_first = load_file(checkpoints / "checkpoint-000003" / weights)
    assert any(not torch.equal(base_or_first[k], actual[k]) for k in actual)
