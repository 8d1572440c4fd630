"""Several processes run a whole command (``torchrun -m hubtools train-and-push``): one concept set, one
push, the weights of one process at the global batch size.

Each test launches 2 CPU processes over gloo (``ACCELERATE_USE_CPU=1``, one thread each, a timeout so that
nothing hangs); they are few and small because the whole suite shares 2 cores.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hubtools.cli.app import main
from hubtools.resources import DEMO_CONCEPT_DIR
from test_training_support import subprocess_env

# Why a tolerance and not equality: under 2 processes each takes the mean loss of its row and DDP averages
# the two gradients (an all-reduce), where one process at batch 2 sums both rows inside each kernel's
# backward; float32 sums in another order differ in the last bits. AdamW divides each gradient element by
# its own running RMS, so where a gradient is ~0 such a last-bit difference can move that weight's update
# by up to the learning rate. Measured over 4 steps at lr 5e-4: 674 of 793k weights differ (max 3.8e-5),
# where a different global batch moves nearly all of them, by up to 4e-3. Hence: at most lr/5 anywhere,
# and all but 1% of the weights equal to 1e-6.
LEARNING_RATE = 5e-4
MAX_DIFFERENCE = LEARNING_RATE / 5
UNET = Path("unet") / "diffusion_pytorch_model.safetensors"
FLAGS = ["--identifier", "nlwx", "--class-noun", "dog", "--resolution", "64", "--steps", "4", "--lr", str(LEARNING_RATE),
         "--device", "cpu", "--num-class-images", "3", "--checkpoint-every", "2", "--quiet"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_config(tmp_path: Path, evaluation: str = "") -> Path:
    path = tmp_path / "small.toml"
    # 3 class images one per batch and 2 prompts x 3 seeds x 2 guidance scales + a checkpoint row: shares that
    # do not split evenly
    path.write_text("[prior]\ngeneration_steps = 2\ngeneration_batch_size = 1\n\n"
                    "[sampling]\nnum_inference_steps = 2\nseeds = [0, 1, 2]\nguidance_scales = [7.0, 3.0]\n"
                    'prompts = ["a photo of {identifier} {class_noun}", "a {identifier} {class_noun} on a beach"]\n'
                    + evaluation, encoding="utf-8")
    return path


def eval_section(tmp_path: Path) -> str:
    """The DreamBench eval with the tiny encoders, small: 2 prompts x 2 seeds + 1 class image in batches of 2 (3
    batches: shares that do not split evenly), ours and the base model, the images kept to compare."""
    from test_evaluation_run import build_tiny_encoder_folders

    dino, clip = build_tiny_encoder_folders(tmp_path / "encoders")
    prompts = tmp_path / "eval-prompts.txt"
    prompts.write_text("a photo of {identifier} {class_noun}\na {identifier} {class_noun} in the snow\n",
                       encoding="utf-8")
    return (f'\n[eval]\nenabled = true\nprompts = "{prompts.as_posix()}"\nn_per_prompt = 2\nn_class_images = 1\n'
            f'batch_size = 2\nsave_images = true\ndino_model = "{dino.as_posix()}"\nclip_model = "{clip.as_posix()}"\n')


def torchrun(args: list[str], *, processes: int = 2, timeout: int = 300, launcher: list[str] | None = None,
             **env: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N -m hubtools ARGS`` on the CPU, threads pinned, never hanging."""
    launcher = launcher or ["--standalone", "--nproc-per-node", str(processes)]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "hubtools", *args],
                          env=subprocess_env(ACCELERATE_USE_CPU="1", **env), capture_output=True, text=True,
                          timeout=timeout)


def assert_same_weights(first: Path, second: Path) -> None:
    """Equal to float rounding (see MAX_DIFFERENCE)."""
    one, two = load_file(first), load_file(second)
    assert one.keys() == two.keys()
    worst = max(float((one[key] - two[key]).abs().max()) for key in one)
    differing = sum(int(((one[key] - two[key]).abs() > 1e-6).sum()) for key in one)
    total = sum(tensor.numel() for tensor in one.values())
    assert worst <= MAX_DIFFERENCE and differing <= total // 100, (worst, differing, total)


@pytest.mark.multiprocess
def test_train_and_push_under_torchrun_pushes_once_and_trains_as_one_process(tmp_path, capsys, local_hub,
                                                                            tiny_model_repo, hf_token, monkeypatch):
    """Also: the class images, the grids and the evaluation images that 2 processes drew between them are the
    bytes 1 process draws, and the main process's scores are the ones 1 process gets."""
    import json

    from huggingface_hub import HfApi

    repo_id = f"{local_hub.user}/nlwx-dog-torchrun"
    config = small_config(tmp_path, eval_section(tmp_path))
    run = tmp_path / "two"
    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "cache-two"))
    launched = torchrun(["train-and-push", "--config", str(config), "--base-model", tiny_model_repo,
                         "--concept", str(DEMO_CONCEPT_DIR), "--repo", repo_id, "--out", str(run), *FLAGS,
                         "--set", "training.batch_size=1"])
    assert launched.returncode == 0, launched.stderr[-4000:]
    # One result, from the main process; the push happened once.
    assert launched.stdout.count(f"{local_hub.url}/{repo_id}") == 1, launched.stdout
    commits = HfApi().list_repo_commits(repo_id)
    assert len([c for c in commits if c.title != "initial commit"]) == 1, [c.title for c in commits]
    assert "unet/diffusion_pytorch_model.safetensors" in HfApi().list_repo_files(repo_id)
    assert '"num_processes": 2' in (run / "train_result.json").read_text()

    # One process at batch 2 (the same global batch) ends with the same weights, from the same class images.
    monkeypatch.setenv("HUBTOOLS_CACHE", str(tmp_path / "cache-one"))
    code = main(["train", "--config", str(config), "--base-model", tiny_model_repo, "--concept",
                 str(DEMO_CONCEPT_DIR), "--out", str(tmp_path / "one"), *FLAGS, "--set", "training.batch_size=2"])
    assert code == 0, capsys.readouterr().err
    assert_same_weights(run / UNET, tmp_path / "one" / UNET)
    class_images = [sorted((tmp_path / cache).glob("class-images/*/*.png")) for cache in ("cache-two", "cache-one")]
    assert len(class_images[0]) == 3 and [p.read_bytes() for p in class_images[0]] == \
        [p.read_bytes() for p in class_images[1]]

    # The grids and the evaluation of the 2-process run, drawn again by 1 process: the same bytes, the same scores.
    again = tmp_path / "again"
    shutil.copytree(run, again)
    shutil.rmtree(again / "images" / "eval")
    (again / "eval.json").unlink()
    assert main(["sample", str(again), "--quiet"]) == 0, capsys.readouterr().err
    grids = sorted(path.name for path in (run / "images").glob("*.png"))
    assert {"samples_grid.png", "guidance_sweep.png", "checkpoints_grid.png", "widget.png"} <= set(grids)
    for name in grids:
        assert (run / "images" / name).read_bytes() == (again / "images" / name).read_bytes(), name
    assert main(["--quiet", "eval", str(again)]) == 0, capsys.readouterr().err
    drawn = sorted(path.relative_to(run).as_posix() for path in (run / "images" / "eval").rglob("*.png"))
    assert len(drawn) == 2 * (2 * 2 + 1), drawn  # ours and base: 2 prompts x 2 seeds + 1 class image
    assert drawn == sorted(path.relative_to(again).as_posix() for path in (again / "images" / "eval").rglob("*.png"))
    for name in drawn:
        assert (run / name).read_bytes() == (again / name).read_bytes(), name
    two, one = (json.loads((folder / "eval.json").read_text()) for folder in (run, again))
    assert two["ours"] == one["ours"] and two["baseline"] == one["baseline"] and two["real"] == one["real"]
    assert "DINO" in (run / "README.md").read_text(encoding="utf-8")


FAILING = """
import sys, time
from hubtools import distributed
from hubtools.errors import InputError

distributed.set_up(cpu=True)
try:
    if sys.argv[1] == "fails":
        def work():
            if distributed.rank() == 1:
                raise InputError("photo 3 of process 1 is unreadable")
            return distributed.rank()
        distributed.each("the class images", work)
    else:  # process 1 never comes to the wait
        if distributed.rank() == 1:
            time.sleep(30)
        distributed.barrier("the sample grids")
except Exception as error:
    print(f"process {distributed.rank()}: {type(error).__name__}: {error}", flush=True)
    sys.exit(getattr(error, "exit_code", 1))
"""


@pytest.mark.multiprocess
def test_a_failure_in_one_process_ends_all_with_its_error_and_a_wait_times_out(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    launcher = ["--standalone", "--nproc-per-node", "2", str(script)]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, "fails"], capture_output=True,
                         text=True, timeout=120, env=subprocess_env(ACCELERATE_USE_CPU="1"))
    assert run.returncode != 0
    assert "process 0: DistributedError: process 1 failed at the class images: photo 3 of process 1 is unreadable" \
        in run.stdout, run.stdout + run.stderr[-2000:]
    assert "process 1: InputError: photo 3 of process 1 is unreadable" in run.stdout

    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, "waits"], capture_output=True,
                         text=True, timeout=120, env=subprocess_env(ACCELERATE_USE_CPU="1",
                                                                   HUBTOOLS_DISTRIBUTED_TIMEOUT="0.05"))
    assert run.returncode != 0
    assert "process 0: DistributedError: process 0 stopped waiting for the others at the sample grids" in run.stdout, \
        run.stdout + run.stderr[-2000:]
    assert "HUBTOOLS_DISTRIBUTED_TIMEOUT" in run.stdout
