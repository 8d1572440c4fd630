"""The trainer's parts without a model: loss, data order, memory profiles, checkpoint bookkeeping."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMScheduler

from hubtools.config import RunConfig
from hubtools.errors import HubtoolsError
from hubtools.training import checkpoints as ckpt
from hubtools.training.data import data_indices, step_generator
from hubtools.families.ddpm import add_noise, snr_weights, training_target
from hubtools.training.loss import dreambooth_loss
from hubtools.training.memory import MemoryChoice, apply_choice, choose_profile, next_smaller_profile, out_of_memory_error
from hubtools.runfolder import read_jsonl
from hubtools.training.metrics import plot_loss_curve, smooth


def _scheduler(prediction_type="epsilon"):
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type)


# -- loss ------------------------------------------------------------------------------------------------


def test_prior_term_is_split_off_and_weighted():
    target = torch.zeros(4, 4, 2, 2)
    prediction = torch.stack([torch.full((4, 2, 2), v) for v in (1.0, 1.0, 2.0, 2.0)])  # instance MSE 1, prior 4
    for weight in (0.0, 1.0, 2.5):
        parts = dreambooth_loss(prediction, target, num_instance=2, prior_loss_weight=weight)
        assert parts.instance_loss.item() == pytest.approx(1.0)
        assert parts.prior_loss.item() == pytest.approx(4.0)
        assert parts.loss.item() == pytest.approx(1.0 + weight * 4.0)


def test_without_class_examples_there_is_no_prior_term():
    parts = dreambooth_loss(torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2), num_instance=2, prior_loss_weight=3.0)
    assert parts.prior_loss is None and parts.loss.item() == pytest.approx(1.0)


def test_target_is_noise_for_epsilon_and_velocity_for_v_prediction():
    latents, noise = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    timesteps = torch.tensor([10, 900])
    assert torch.equal(training_target(_scheduler(), latents, noise, timesteps), noise)
    v_scheduler = _scheduler("v_prediction")
    velocity = training_target(v_scheduler, latents, noise, timesteps)
    alphas = v_scheduler.alphas_cumprod[timesteps].sqrt().view(-1, 1, 1, 1)
    sigmas = (1 - v_scheduler.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(velocity, alphas * noise - sigmas * latents, atol=1e-6)


def test_min_snr_weights_clip_high_snr_timesteps_only():
    scheduler = _scheduler()
    weights = snr_weights(scheduler, torch.tensor([1, 999]), gamma=5.0)
    assert weights[0].item() < 0.01  # t=1 has a huge SNR: clipped to gamma/SNR
    assert weights[1].item() == pytest.approx(1.0)  # SNR < gamma: unweighted


def test_offset_noise_shifts_channel_means():
    scheduler = _scheduler()
    noise = torch.zeros(1, 4, 8, 8)
    offset = torch.ones(1, 4, 1, 1)
    _noisy, used = add_noise(scheduler, torch.zeros(1, 4, 8, 8), noise, torch.tensor([500]), 0.1, offset)
    assert torch.allclose(used, torch.full_like(used, 0.1))
    _noisy, used = add_noise(scheduler, torch.zeros(1, 4, 8, 8), noise, torch.tensor([500]), 0.0, offset)
    assert torch.equal(used, noise)


# -- data order --------------------------------------------------------------------------------------------


def test_data_order_is_a_function_of_step_and_covers_every_example_each_epoch():
    first = [data_indices(m, count=5, per_process=1, process_index=0, num_processes=1, seed=3)[0] for m in range(10)]
    again = [data_indices(m, count=5, per_process=1, process_index=0, num_processes=1, seed=3)[0] for m in range(10)]
    assert first == again
    assert sorted(first[:5]) == sorted(first[5:]) == [0, 1, 2, 3, 4]
    other_seed = [data_indices(m, count=5, per_process=1, process_index=0, num_processes=1, seed=4)[0] for m in range(10)]
    assert other_seed != first


def test_processes_take_disjoint_shards_of_each_global_batch():
    shards = [data_indices(0, count=4, per_process=2, process_index=p, num_processes=2, seed=0) for p in (0, 1)]
    assert sorted(shards[0] + shards[1]) == [0, 1, 2, 3]


def test_step_noise_differs_by_process_and_step_but_repeats():
    draw = lambda m, p: torch.randn(3, generator=step_generator(0, m, p))  # noqa: E731
    assert torch.equal(draw(5, 0), draw(5, 0))
    assert not torch.equal(draw(5, 0), draw(5, 1))
    assert not torch.equal(draw(5, 0), draw(6, 0))


# -- memory profiles ---------------------------------------------------------------------------------------


def test_auto_on_cpu_keeps_the_configured_settings_and_says_why():
    cfg = RunConfig.model_validate({"training": {"memory": "auto", "method": "full"}})
    choice = choose_profile(cfg, torch.device("cpu"), "sd")
    assert choice.profile == "manual" and "no GPU" in choice.reason and choice.method == "full"


def test_named_low_profile_switches_to_lora_with_a_lora_learning_rate():
    cfg = RunConfig.model_validate({"training": {"memory": "low", "method": "full"}}).resolve()
    choice = choose_profile(cfg, torch.device("cpu"), "sd")
    effective = apply_choice(cfg, choice)
    assert (choice.profile, effective.training.method) == ("low", "lora")
    assert effective.training.gradient_checkpointing and effective.learning_rate == 1e-4
    assert effective.training.use_8bit_adam  # bitsandbytes is installed in the test environment


def test_out_of_memory_advice_names_the_next_smaller_profile():
    cfg = RunConfig()
    high = MemoryChoice("high", "24 GiB free", "full", False, False)
    assert next_smaller_profile(cfg, high, "sd") == "medium"
    message = str(out_of_memory_error(cfg, high, step=12, family="sd"))
    assert "step 12" in message and "--memory medium" in message
    low = MemoryChoice("low", "", "lora", True, True)
    assert "smallest" in str(out_of_memory_error(cfg, low, step=1, family="sd"))
    assert "shard the trained part over several GPUs (torchrun --nproc-per-node N -m hubtools ... --distributed fsdp)" \
        in str(out_of_memory_error(cfg, low, step=1, family="sd"))
    assert "while loading" in str(out_of_memory_error(cfg, low, step=None, family="sd"))
    assert next_smaller_profile(cfg, MemoryChoice("manual", "", "full", False, False), "sd") == "medium"
    assert isinstance(out_of_memory_error(cfg, low, 1, "sd"), HubtoolsError)


# -- checkpoints bookkeeping ---------------------------------------------------------------------------------


def _fake_checkpoint(root, step, complete=True):
    path = root / ckpt.checkpoint_name(step)
    path.mkdir(parents=True)
    if complete:
        (path / ckpt.STATE_FILENAME).write_text(json.dumps({"step": step}))
    return path


def test_only_complete_checkpoints_count_and_rotation_keeps_the_newest(tmp_path):
    for step in (2, 4, 6):
        _fake_checkpoint(tmp_path, step)
    _fake_checkpoint(tmp_path, 8, complete=False)
    (tmp_path / ".tmp-checkpoint-000010").mkdir()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 6]
    assert ckpt.latest_checkpoint(tmp_path)[0] == 6
    assert ckpt.rotate_checkpoints(tmp_path, keep=2) == [4, 6]
    assert not (tmp_path / "checkpoint-000002").exists()
    removed = ckpt.remove_partial(tmp_path)
    assert [p.name for p in removed] == [".tmp-checkpoint-000010"]


def test_config_changes_name_what_matters_and_ignore_what_does_not():
    before = RunConfig.model_validate({"training": {"steps": 10}}).resolve()
    cosmetic = RunConfig.model_validate({"training": {"steps": 20, "checkpoint_every": 5, "validation_every": 3},
                                         "sampling": {"seeds": [9]}}).resolve()
    assert ckpt.config_changes(ckpt.comparable_config(before), ckpt.comparable_config(cosmetic)) == []
    changed = RunConfig.model_validate({"training": {"steps": 10, "learning_rate": 5e-6},
                                        "prior": {"loss_weight": 0.5}}).resolve()
    changes = ckpt.config_changes(ckpt.comparable_config(before), ckpt.comparable_config(changed))
    assert any(c.startswith("training.learning_rate: 2e-06 -> 5e-06") for c in changes)
    assert any(c.startswith("prior.loss_weight") for c in changes)
    scheduled = lambda steps: RunConfig.model_validate(  # noqa: E731
        {"training": {"steps": steps, "lr_scheduler": "cosine"}}).resolve()
    assert ckpt.config_changes(ckpt.comparable_config(scheduled(10)), ckpt.comparable_config(scheduled(20)))


# -- metrics ---------------------------------------------------------------------------------------------------


def test_loss_curve_is_a_png_and_cut_lines_are_skipped(tmp_path):
    from PIL import Image

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1 / s, "prior_loss": 0.5}) + "\n" for s in range(1, 41))
                       + '{"step": 41, "lo', encoding="utf-8")
    rows = read_jsonl(metrics)
    assert len(rows) == 40
    path = plot_loss_curve(rows, tmp_path / "images" / "loss_curve.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (800, 450)
        assert len(set(image.convert("RGB").getdata())) > 20  # drawn, not blank
    assert plot_loss_curve([], tmp_path / "none.png", title="t") is None
    assert smooth([1, 3, 5], 2) == [1, 2, 4]
