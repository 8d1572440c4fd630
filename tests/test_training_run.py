"""End-to-end training of the tiny model in-process: outputs, loading, logging, resume rules, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from hubtools.config import load_run_config, save_config
from hubtools.errors import ConfigError, HubtoolsError
from hubtools.runfolder import LORA_WEIGHTS_FILENAME
from hubtools.training import TrainResult, train_dreambooth
from test_training_support import make_run, render, tiny_base

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTRACT_KEYS = {
    "method", "steps_done", "steps_total", "final_loss", "losses_tail", "wall_seconds", "steps_per_second",
    "peak_memory_bytes", "device", "mixed_precision", "memory_profile", "base_model", "base_revision",
    "weight_files", "checkpoints", "class_images", "num_instance_images", "resumed_from", "hubtools_version",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def base_pipe(root):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base(root), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def full_run(root):
    cfg, run = make_run(root, "full", training={"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 2,
                                                 "validation_every": 3})
    return run, train_dreambooth(cfg, run, progress=False)


@pytest.fixture(scope="module")
def lora_run(root):
    cfg, run = make_run(root, "lora", training={"method": "lora", "steps": 4, "lora_rank": 4, "lora_alpha": 8.0,
                                                 "learning_rate": 5e-2, "checkpoint_every": 2},
                        prior={"enabled": False})
    return run, train_dreambooth(cfg, run, progress=False)


def test_full_run_writes_the_contracted_result(full_run):
    run, result = full_run
    assert isinstance(result, TrainResult)
    written = json.loads((run / "train_result.json").read_text())
    assert CONTRACT_KEYS <= set(written) and written == json.loads(json.dumps(result.to_dict()))
    assert (written["method"], written["steps_done"], written["steps_total"]) == ("full", 6, 6)
    assert written["checkpoints"] == [4, 6] and written["resumed_from"] is None
    assert written["class_images"]["count"] == 2 and written["num_instance_images"] == 3
    assert written["device"] == "cpu" and written["mixed_precision"] == "no" and written["peak_memory_bytes"] is None
    assert len(written["losses_tail"]) == 6 and written["final_loss"] == written["losses_tail"][-1]
    import hashlib

    paths = {entry["path"] for entry in written["weight_files"]}
    assert "unet/diffusion_pytorch_model.safetensors" in paths
    for entry in written["weight_files"]:
        data = (run / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]


def test_full_run_folder_layout_checkpoints_and_logs(full_run):
    run, _ = full_run
    for name in ("model_index.json", "unet/config.json", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"):
        assert (run / name).is_file(), name
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-000004", "checkpoint-000006"]  # kept the newest 2, no temp leftovers
    newest = run / "checkpoints" / "checkpoint-000006"
    assert (newest / "unet" / "diffusion_pytorch_model.safetensors").is_file() and (newest / "unet" / "config.json").is_file()
    assert not (newest / "model.safetensors").exists()  # trainable weights once, in diffusers layout
    assert json.loads((newest / "hubtools_state.json").read_text())["step"] == 6

    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        assert {"loss", "instance_loss", "prior_loss", "lr", "it/s", "time"} <= set(row)
        assert row["loss"] == pytest.approx(row["instance_loss"] + 1.0 * row["prior_loss"], rel=1e-5)
        assert row["prior_loss"] > 0
    assert list((run / "logs" / "tensorboard").rglob("events.out.tfevents.*"))

    for step in (3, 6):
        with Image.open(run / "images" / "validation" / f"step-{step:06d}.png") as grid:
            assert grid.size == (128, 128)  # 2 prompts x 2 seeds of 64 px
    with Image.open(run / "images" / "loss_curve.png") as curve:
        assert curve.format == "PNG" and curve.width >= 600


def test_full_model_loads_as_a_pipeline_and_differs_from_the_base(full_run, base_pipe):
    from diffusers import DiffusionPipeline

    from hubtools.pipelines import load_run_pipeline

    run, _ = full_run
    trained = DiffusionPipeline.from_pretrained(run, safety_checker=None, requires_safety_checker=False)
    trained.set_progress_bar_config(disable=True)
    assert np.abs(render(trained) - render(base_pipe)).max() > 1e-3
    assert np.allclose(render(load_run_pipeline(run)), render(trained))


def test_lora_weights_load_into_the_base_pipeline_and_change_its_output(lora_run, base_pipe, root):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    run, result = lora_run
    # the diffusers file, and beside it the kohya-layout one for AUTOMATIC1111 / ComfyUI, named after the run
    assert result.method == "lora"
    assert [f.path for f in result.weight_files] == [LORA_WEIGHTS_FILENAME, f"{run.name}.safetensors"]
    assert not (run / "model_index.json").exists()
    assert (run / "checkpoints" / "checkpoint-000004" / LORA_WEIGHTS_FILENAME).is_file()
    with safe_open(run / LORA_WEIGHTS_FILENAME, "pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata() or {}
    assert keys and all(k.startswith("unet.") for k in keys)
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert (adapter["unet.r"], adapter["unet.lora_alpha"]) == (4, 8)  # alpha != rank survives the round trip

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base(root), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    before = render(pipe)
    pipe.load_lora_weights(run, weight_name=LORA_WEIGHTS_FILENAME)
    assert np.abs(render(pipe) - before).max() > 1e-3
    assert np.allclose(before, render(base_pipe))


def test_loss_goes_down_on_a_tiny_set(root):
    cfg, run = make_run(root, "learns", training={"steps": 40, "learning_rate": 2e-3, "batch_size": 2},
                        prior={"enabled": False})
    result = train_dreambooth(cfg, run, progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and result.class_images is None
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses


def test_resume_refuses_a_changed_config_naming_it_unless_forced(full_run, root):
    run = root / "changed"
    shutil.copytree(full_run[0], run)
    cfg = load_run_config(run)
    cfg.prior.loss_weight = 0.5
    save_config(cfg, run / "hubtools.toml")
    with pytest.raises(ConfigError, match=r"changed since checkpoint-000006: prior\.loss_weight: 1\.0 -> 0\.5"):
        train_dreambooth(load_run_config(run), run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="--resume"):  # a fresh start would silently drop the checkpoints
        train_dreambooth(load_run_config(run), run, progress=False)


def test_resume_continues_from_the_newest_checkpoint_and_can_extend_a_constant_schedule(full_run, root):
    run = root / "extended"
    shutil.copytree(full_run[0], run)
    (run / "checkpoints" / ".tmp-checkpoint-000008").mkdir()  # what a crash mid-save leaves
    cfg = load_run_config(run)
    cfg.training.steps = 8
    save_config(cfg, run / "hubtools.toml")
    result = train_dreambooth(load_run_config(run), run, resume=True, progress=False)
    assert (result.resumed_from, result.steps_done, result.checkpoints) == (6, 8, [6, 8])
    steps = [json.loads(line)["step"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert not (run / "checkpoints" / ".tmp-checkpoint-000008").exists()


def test_resume_of_a_run_stopped_before_its_first_checkpoint_trains_it_from_the_start(root):
    """Ctrl-C before the first checkpoint leaves a run folder and no checkpoint: --resume starts it over there
    (a fresh run into the same folder would be refused as holding a run already)."""
    cfg, run = make_run(root, "nothing", training={"steps": 3, "checkpoint_every": 0}, prior={"enabled": False})
    (run / "logs").mkdir(exist_ok=True)
    (run / "logs" / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # the stopped run's first row
    result = train_dreambooth(cfg, run, resume=True, progress=False)
    assert (result.resumed_from, result.steps_done) == (None, 3)
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3] and rows[0]["loss"] != 9.0


def test_nan_loss_stops_with_the_step_and_a_hint(root):
    cfg, run = make_run(root, "diverges", training={"learning_rate": 1e30, "steps": 4}, prior={"enabled": False})
    with pytest.raises(HubtoolsError, match=r"loss became nan at step \d.*lower the learning rate"):
        train_dreambooth(cfg, run, progress=False)


def test_a_base_model_without_a_component_is_named(root):
    base = root / "no-vae"
    shutil.copytree(tiny_base(root), base)
    index = json.loads((base / "model_index.json").read_text())
    del index["vae"]
    (base / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(base / "vae")
    cfg, run = make_run(root, "novae", base=base)
    with pytest.raises(ConfigError, match="vae"):
        train_dreambooth(cfg, run, progress=False)


VARIANTS = {
    "bf16-text-encoder": {"mixed_precision": "bf16", "train_text_encoder": True},
    "accumulation-snr-offset-uncached": {"gradient_accumulation_steps": 2, "snr_gamma": 5.0, "offset_noise": 0.1,
                                         "cache_latents": False, "lr_scheduler": "linear"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_variants_resume_exactly_and_keep_weights_fp32(root, variant):
    from safetensors.torch import load_file

    cfg, run = make_run(root, f"variant-{variant}", training={"steps": 4, "checkpoint_every": 2,
                                                               "keep_checkpoints": 2, **VARIANTS[variant]})
    result = train_dreambooth(cfg, run, progress=False)
    assert all(np.isfinite(result.losses_tail)) and len(result.losses_tail) == 4
    resumed = root / f"variant-{variant}-resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-000004")
    again = train_dreambooth(load_run_config(resumed), resumed, progress=False, resume=True)
    assert again.resumed_from == 2
    for entry in result.weight_files:
        expected, actual = load_file(run / entry.path), load_file(resumed / entry.path)
        assert all(t.dtype == torch.float32 for t in expected.values()), entry.path
        assert all(np.array_equal(expected[k].numpy(), actual[k].numpy()) for k in expected), entry.path
    if cfg.training.train_text_encoder:
        base = load_file(tiny_base(root) / "text_encoder" / "model.safetensors")
        trained = load_file(run / "text_encoder" / "model.safetensors")
        assert any(not np.array_equal(base[k].numpy(), trained[k].numpy()) for k in base)
        assert result.mixed_precision == "bf16"


def test_lora_on_the_text_encoder_saves_both_or_says_which_peft_it_needs(root):
    from safetensors import safe_open

    cfg, run = make_run(root, "lora-te", training={"method": "lora", "train_text_encoder": True, "steps": 2},
                        prior={"enabled": False})
    try:
        train_dreambooth(cfg, run, progress=False)
    except ConfigError as error:  # transformers 5 needs peft >= 0.22 for adapters on its models
        assert "peft" in str(error) and "--freeze-text-encoder" in str(error)
        return
    with safe_open(run / LORA_WEIGHTS_FILENAME, "pt") as handle:
        prefixes = {key.split(".", 1)[0] for key in handle.keys()}
    assert prefixes == {"unet", "text_encoder"}


def test_hub_base_model_revision_is_recorded_and_pinned_on_resume(root, local_hub):
    from huggingface_hub import HfApi

    from hubtools.tinymodel import publish_tiny_model

    repo = publish_tiny_model(local_hub.url, local_hub.token, repo_id=f"{local_hub.user}/tiny-sd-for-resume")
    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    first_sha = api.model_info(repo).sha
    cfg, run = make_run(root, "from-hub", training={"steps": 2, "checkpoint_every": 2}, prior={"enabled": False})
    cfg.model.base_model = repo
    save_config(cfg, run / "hubtools.toml")
    result = train_dreambooth(cfg, run, progress=False, token=local_hub.token)
    assert (result.base_model, result.base_revision) == (repo, first_sha)

    api.upload_file(path_or_fileobj=b"# moved on\n", path_in_repo="README.md", repo_id=repo)
    assert api.model_info(repo).sha != first_sha
    cfg.training.steps = 3
    save_config(cfg, run / "hubtools.toml")
    resumed = train_dreambooth(load_run_config(run), run, resume=True, progress=False, token=local_hub.token)
    assert resumed.base_revision == first_sha and resumed.resumed_from == 2


def test_out_of_memory_is_answered_with_the_next_smaller_profile(root, monkeypatch):
    import hubtools.training.loop as loop

    real_loss, calls = loop.dreambooth_loss, []

    def runs_out_at_step_3(*args, **kwargs):  # what CUDA raises when the activations no longer fit
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "dreambooth_loss", runs_out_at_step_3)
    cfg, run = make_run(root, "oom", training={"steps": 4}, prior={"enabled": False})
    with pytest.raises(HubtoolsError, match=r"out of memory at step 3 with the manual memory profile \(full\): "
                                            r"retry with --memory medium"):
        train_dreambooth(cfg, run, progress=False)


def test_forcing_a_resume_past_an_incompatible_change_is_a_clear_error(full_run, root):
    run = root / "switched"
    shutil.copytree(full_run[0], run)
    cfg = load_run_config(run)
    cfg.training.method = "lora"
    save_config(cfg, run / "hubtools.toml")
    with pytest.raises(ConfigError, match="training.method: 'full' -> 'lora'"):
        train_dreambooth(load_run_config(run), run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="checkpoint-000006 cannot be loaded with the current settings"):
        train_dreambooth(load_run_config(run), run, resume=True, force=True, progress=False)


def test_fidelity_curve_scores_each_validation_grid_with_dino(root):
    from test_evaluation_run import build_tiny_encoder_folders

    from hubtools.evaluation.fidelity import FidelityProbe

    dino_dir, _ = build_tiny_encoder_folders(root / "encoders")
    cfg, run = make_run(root, "fidelity", training={"steps": 4, "validation_every": 2}, prior={"enabled": False},
                        eval={"during_training": True, "dino_model": str(dino_dir)})
    train_dreambooth(cfg, run, progress=False)
    rows = [json.loads(line) for line in (run / "logs" / "fidelity.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4]
    # the logged number is DINO of the validation images (the grid's cells) against the concept photos
    grid = Image.open(run / "images" / "validation" / "step-000004.png").convert("RGB")
    cell = grid.width // 2
    cells = [grid.crop((x * cell, y * cell, (x + 1) * cell, (y + 1) * cell)) for y in range(2) for x in range(2)]
    probe = FidelityProbe.for_run(run, model_id=str(dino_dir), device="cpu")
    assert rows[-1]["dino"] == pytest.approx(probe.score(cells), abs=1e-5)
    # and the loss curve carries it: the plot has the fidelity line's green, a plain run's plot has none
    def green_pixels(path) -> int:
        pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return int((np.abs(pixels - np.array([44, 160, 44])).sum(axis=-1) < 40).sum())

    assert green_pixels(run / "images" / "loss_curve.png") > 50
    plain_cfg, plain = make_run(root, "no-fidelity", training={"steps": 4, "validation_every": 2},
                                prior={"enabled": False})
    train_dreambooth(plain_cfg, plain, progress=False)
    assert green_pixels(plain / "images" / "loss_curve.png") == 0
    assert not (plain / "logs" / "fidelity.jsonl").exists()
