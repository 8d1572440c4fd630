"""`hubtools train-and-push` end to end on the tiny model and the local hub, and the errors a user can cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hubtools.cli.app import main
from hubtools.resources import DEMO_CONCEPT_DIR
from test_cli_commands import hubtools, user_env

TINY_FLAGS = [
    "--resolution", "64", "--steps", "6", "--lr", "5e-4", "--device", "cpu",
    "--num-class-images", "2", "--checkpoint-every", "3", "--quiet",
]


def _dog_run(command: str, base_model: str, out: Path, repo_id: str | None = None,
             flags: list[str] = TINY_FLAGS) -> list[str]:
    """Arguments of a tiny run on the shipped dog photos (``repo_id`` for train-and-push)."""
    return [command, "--base-model", base_model, "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx",
            "--class-noun", "dog", *(["--repo", repo_id] if repo_id else []), "--out", str(out), *flags]


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _small_sampling_config(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(
        "[prior]\ngeneration_steps = 2\n\n"
        "[sampling]\nnum_inference_steps = 2\nseeds = [0, 1]\n"
        'prompts = ["a photo of {identifier} {class_noun}", "a photo of {identifier} {class_noun} on the beach"]\n',
        encoding="utf-8",
    )
    return path


def test_train_and_push_end_to_end(tmp_path, capsys, local_hub, tiny_model_repo, hf_token):
    from diffusers import DiffusionPipeline
    from huggingface_hub import HfApi, ModelCard

    run_dir = tmp_path / "run"
    repo_id = f"{local_hub.user}/nlwx-dog-e2e"
    command = ["train-and-push", "--config", str(_small_sampling_config(tmp_path)), "--base-model", tiny_model_repo,
               "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx", "--class-noun", "dog",
               "--repo", repo_id, "--out", str(run_dir), *TINY_FLAGS]
    code, out, err = _run(command, capsys)
    assert code == 0, err
    last_line = out.strip().splitlines()[-1]
    assert last_line == f"{local_hub.url}/{repo_id}"

    # The run folder alone reproduces the run.
    saved = (run_dir / "hubtools.toml").read_text(encoding="utf-8")
    assert 'identifier = "nlwx"' in saved and "steps = 6" in saved and "learning_rate = 0.0005" in saved
    assert json.loads((run_dir / "identifier.json").read_text())["single_token"] is True

    files = set(HfApi().list_repo_files(repo_id))
    assert {"README.md", "model_index.json", "unet/diffusion_pytorch_model.safetensors", "hubtools.toml"} <= files
    assert not any(f.startswith(("checkpoints/", "concept/images/")) for f in files)

    card = ModelCard.load(repo_id)
    assert card.data.base_model == tiny_model_repo
    assert card.data.instance_prompt == "a photo of nlwx dog"
    assert "dreambooth" in card.data.tags

    pipe = DiffusionPipeline.from_pretrained(repo_id)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a photo of nlwx dog", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images[0]
    assert image.shape == (64, 64, 3)

    # A retried push of the same run changes nothing on the Hub.
    commits_before = len(HfApi().list_repo_commits(repo_id))
    code, out, err = _run(["push", str(run_dir), repo_id], capsys)
    assert code == 0, err
    assert len(HfApi().list_repo_commits(repo_id)) == commits_before
    assert hf_token not in (run_dir / "hubtools.toml").read_text() + card.content

    # The same command again: the folder holds a run, and --resume on a finished one trains nothing.
    code, _, err = _run(command, capsys)
    assert code == 2 and "already holds a run: continue it with --resume" in err
    trained = (run_dir / "train_result.json").read_text()
    code, out, err = _run(["train-and-push", "--out", str(run_dir), "--resume", "--quiet"], capsys)
    assert code == 0, err
    assert "training finished before (step 6)" in err and out.strip().splitlines()[-1].endswith(repo_id)
    assert (run_dir / "train_result.json").read_text() == trained
    assert len(HfApi().list_repo_commits(repo_id)) == commits_before
    code, _, err = _run(["train", str(run_dir), "--resume", "--quiet"], capsys)
    assert code == 0 and "nothing to resume" in err


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = _run(
        ["train-and-push", "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "pkblz", "--class-noun", "ball",
         "--repo", "me/pokeball", "--out", str(run_dir), "--dry-run"],
        capsys,
    )
    assert code == 0, err
    assert "a photo of pkblz ball" in out
    assert "800 steps" in out and "lr 2e-06" in out
    assert "3 tokens" in err or "3 token" in out
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--concept", "no/such/folder"], "concept folder not found: no/such/folder"),
        (["--steps", "0"], "--steps (training.steps): Input should be greater than or equal to 1"),
        (["--resolution", "100"], "--resolution (training.resolution): must be a multiple of 8"),
        (["--repo", "not-a-repo-id"], "--repo (publish.repo_id): must look like namespace/name"),
        (["--lr", "-1"], "--learning-rate (training.learning_rate): Input should be greater than 0"),
        (["--config", "missing.toml"], "config file not found: missing.toml"),
        (["--vae", "./no/such/vae"], "--vae ./no/such/vae: no such folder, and not a Hub model id (namespace/name)"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, args, expected):
    base = ["--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx", "--class-noun", "dog",
            "--repo", "me/x", "--out", str(tmp_path / "run")]
    code, out, err = _run(["train-and-push", *base, *args], capsys)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_flags_are_named(capsys):
    code, _, err = _run(["train-and-push", "--repo", "me/x"], capsys)
    assert code == 2
    assert "missing --concept, --identifier, --class-noun" in err


def test_no_token_for_the_hub(tmp_path, capsys, local_hub, tiny_model_repo, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, _, err = _run(_dog_run("train-and-push", tiny_model_repo, tmp_path / "run", "tester/x"), capsys)
    assert code == 2
    assert "no Hugging Face token" in err and "hf auth login" in err
    assert not (tmp_path / "run").exists()


def test_token_for_another_namespace(tmp_path, capsys, local_hub, tiny_model_repo, hf_token):
    code, _, err = _run(_dog_run("train-and-push", tiny_model_repo, tmp_path / "run", "other/x"), capsys)
    assert code == 2
    assert "cannot push to other/x" in err and "--repo tester/x" in err
    assert hf_token not in err


def test_base_model_that_is_no_folder_and_no_id(tmp_path, capsys):
    code, _, err = _run(_dog_run("train", "./no/such/model", tmp_path / "run"), capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: base model ./no/such/model: no such folder, and not a Hub model id (namespace/name): check the path, "
        "or give the id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert "Traceback" not in err and "bug in hubtools" not in err
    assert not (tmp_path / "run").exists()


def test_base_model_not_found(tmp_path, capsys, local_hub, hf_token):
    code, _, err = _run(_dog_run("train", "nobody/no-such-model", tmp_path / "run"), capsys)
    assert code == 2
    assert "base model nobody/no-such-model not found" in err
    assert "Traceback" not in err


def test_full_size_model_without_gpu_is_refused(tmp_path, capsys, local_hub, hf_token):
    """Only model_index.json and the UNet config are read, so a repo holding SD 1.5's configs (and no weights)
    is enough."""
    from huggingface_hub import HfApi

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    repo_id = f"{local_hub.user}/full-size-config-only"
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    unet_config = {"_class_name": "UNet2DConditionModel", "block_out_channels": [320, 640, 1280, 1280]}
    api.upload_file(path_or_fileobj=json.dumps(unet_config).encode(), path_in_repo="unet/config.json", repo_id=repo_id)
    model_index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    api.upload_file(path_or_fileobj=json.dumps(model_index).encode(), path_in_repo="model_index.json", repo_id=repo_id)
    # no --device: the default (auto) finds no GPU
    code, _, err = _run(_dog_run("train", repo_id, tmp_path / "run", flags=["--resolution", "64", "--quiet"]), capsys)
    assert code == 2
    assert "no CUDA GPU found" in err and "--device cpu" in err and "hubtools demo" in err


def test_full_size_transformer_model_without_gpu_is_refused_from_its_parameter_count(tmp_path, capsys, local_hub,
                                                                                     hf_token):
    """The guard counts the trained component's parameters from its config on the meta device, so a transformer
    family (no UNet, no block widths) is refused too; the count is in the run's base_model.json."""
    from huggingface_hub import HfApi

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    repo_id = f"{local_hub.user}/full-size-transformer-config-only"
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    transformer_config = {"_class_name": "FluxTransformer2DModel"}  # the defaults are FLUX.1's 12B shapes
    api.upload_file(path_or_fileobj=json.dumps(transformer_config).encode(), path_in_repo="transformer/config.json",
                    repo_id=repo_id)
    model_index = {"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}
    api.upload_file(path_or_fileobj=json.dumps(model_index).encode(), path_in_repo="model_index.json", repo_id=repo_id)
    run = tmp_path / "run"
    code, _, err = _run(_dog_run("train", repo_id, run, flags=["--resolution", "64", "--quiet"]), capsys)
    assert code == 2
    assert "no CUDA GPU found" in err and "transformer" in err and "--device cpu" in err
    record = json.loads((run / "base_model.json").read_text())
    assert (record["family"], record["variant"], record["trained_component"]) == ("flux", "dev", "transformer")
    assert record["parameter_count"] > 10_000_000_000 and len(record["commit"]) == 40


def test_unreachable_hub_is_one_line_before_anything_is_done(tmp_path):
    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_XET"}
    env.update(HF_ENDPOINT=dead, HF_TOKEN="hf_not_a_real_token_but_secret")
    result = subprocess.run(
        [sys.executable, "-m", "hubtools",
         *_dog_run("train-and-push", "hubtools/tiny-stable-diffusion", tmp_path / "run", "me/x")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: could not reach the Hub at {dead}") and "HF_ENDPOINT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "hf_not_a_real_token" not in result.stderr
    assert not (tmp_path / "run").exists()

def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ}
    result = subprocess.run(
        [sys.executable, "-m", "hubtools", "--debug", "train-and-push", "--concept", "no/such/folder",
         "--identifier", "nlwx", "--class-noun", "dog", "--repo", "me/x", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


def _offline_user_env() -> dict[str, str]:
    """A user with no Hub configured: the demo starts its own."""
    return {k: v for k, v in user_env().items() if k not in ("HF_ENDPOINT", "TEMP", "TMP")}


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(tmp_path):
    """The README's first command as a user runs it (progress bars on): no arguments, no network, the pushed model
    reloads from the hub, and nothing is left in the system temp directory (issue 30: ``hubtools()`` checks)."""
    result = hubtools("demo", "--out", tmp_path / "demo", env=_offline_user_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("http://127.0.0.1:") and last_line.endswith("/demo/nlwx-dog")
    from PIL import Image

    reloaded = Image.open(tmp_path / "demo" / "from_hub.png")
    assert reloaded.size == (256, 256)
    assert (tmp_path / "demo" / "run" / "README.md").is_file()


@pytest.mark.slow
def test_demo_of_a_lora_family_trains_a_lora(tmp_path):
    """``hubtools demo --family z-image`` as a user runs it (progress bars on): Z-Image's default method, LoRA,
    applies (the demo sets no method), so the hub gets a LoRA that reloads over the tiny base model."""
    env = {**_offline_user_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = tmp_path / "demo"
    result = hubtools("demo", "--family", "z-image", "--steps", "2", "--out", out, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].endswith("/demo/nlwx-dog-z-image")
    trained = json.loads((out / "run" / "train_result.json").read_text())
    assert trained["method"] == "lora"
    assert [entry["path"] for entry in trained["weight_files"]] == ["pytorch_lora_weights.safetensors",
                                                                   "nlwx-dog-z-image.safetensors"]  # + ComfyUI's copy
    assert not (out / "run" / "transformer").exists() and not (out / "run" / "model_index.json").exists()
    card = (out / "run" / "README.md").read_text()
    assert "A DreamBooth **LoRA**" in card and "ZImagePipeline" in card and "pipe.load_lora_weights(" in card
    from PIL import Image

    assert Image.open(out / "from_hub.png").size == (256, 256)  # drawn by the base + the LoRA from the hub
