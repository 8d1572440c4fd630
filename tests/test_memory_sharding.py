"""Memory profiles under FSDP: per GPU = the sharded part / N + the rest, on the real shapes' parameter counts
(benchmarks/*_configs.json, built on the meta device); no GPU needed: the arithmetic takes the free bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubtools.base_model import count_parameters
from hubtools.errors import ConfigError
from hubtools.families.fits import (
    GIB,
    full_fine_tune_estimate,
    full_fine_tune_refusal,
    profile_estimate,
)
from hubtools.training.memory import family_profiles, pick_profile, profile_need

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def real_parameters(file: str, class_name: str, *keys: str) -> int:
    """The trained component's parameters, counted from its real config (on the meta device)."""
    config = json.loads((BENCHMARKS / file).read_text())
    for key in keys:
        config = config[key]
    return count_parameters(class_name, config)


@pytest.fixture(scope="module")
def parameters() -> dict[str, int]:
    return {
        "sd": real_parameters("sd15_configs.json", "UNet2DConditionModel", "unet"),
        "sdxl": real_parameters("sdxl_configs.json", "UNet2DConditionModel", "unet"),
        "flux": real_parameters("flux_configs.json", "FluxTransformer2DModel", "transformer"),
        # the counts these files record, checked against the meta-device build by test_family_sd3 / _qwen_image
        "sd3": json.loads((BENCHMARKS / "sd35_configs.json").read_text())["parameters"]["large"]["transformer"],
        "qwen-image": json.loads((BENCHMARKS / "qwen_image_configs.json").read_text())["parameters"]["transformer"],
    }


def test_the_real_shapes_count_as_published(parameters):
    assert parameters["sd"] == 859_520_964 and parameters["sdxl"] == 2_567_463_684
    assert parameters["flux"] == 11_901_408_320
    assert 8.0e9 < parameters["sd3"] < 8.1e9 and 20.4e9 < parameters["qwen-image"] < 20.5e9


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux", "sd3", "qwen-image"])
def test_a_profile_is_its_sharded_part_over_n_plus_the_rest(parameters, family):
    """One process (or DDP): the profile's own figure. N under FSDP: the trained part (16 bytes a parameter for a
    full fine-tune with AdamW, 10 with 8-bit Adam, 2 for a LoRA's bf16 base) / N + what stays whole, less with
    every process added, never below the whole part."""
    count = parameters[family]
    for profile in family_profiles(family):
        estimate = profile_estimate(profile, count)
        per_parameter = {("full", False): 16, ("full", True): 10}.get((profile.method, profile.use_8bit_adam), 2)
        assert estimate.sharded == count * per_parameter
        assert estimate.whole > 0, (family, profile.name)  # each profile leaves room beside its trained part
        assert estimate.sharded + estimate.whole == int(profile.min_free_gib * GIB)
        assert profile_need(profile, count, 1) == int(profile.min_free_gib * GIB)
        assert profile_need(profile, None, 4) == int(profile.min_free_gib * GIB)  # unknown size: no sharding
        for shards in (2, 4, 8):
            assert profile_need(profile, count, shards) == -(-estimate.sharded // shards) + estimate.whole
        assert profile_need(profile, count, 8) < profile_need(profile, count, 2) < profile_need(profile, count, 1)


def test_auto_under_fsdp_picks_the_profile_that_fits_each_gpu(parameters):
    """FLUX.1 LoRA on 40 GiB GPUs: one process gets medium (high needs 48 GiB); two FSDP processes hold high
    (its 22 GiB bf16 transformer split in two beside ~26 GiB whole: ~37 GiB each)."""
    profiles, count = family_profiles("flux"), parameters["flux"]
    high = profile_estimate(profiles[0], count)
    assert round(high.sharded / GIB, 1) == 22.2 and round(high.per_gpu(2) / GIB, 1) == 36.9

    alone, why = pick_profile(profiles, 40 * GIB, parameters=count, shards=1)
    assert alone.name == "medium"
    assert "high (LoRA, AdamW, no checkpointing (fastest)) fits on 2 GPUs of 40 GiB under FSDP (torchrun " \
           "--nproc-per-node 2 -m hubtools ... --distributed fsdp)" in why
    sharded, why = pick_profile(profiles, 40 * GIB, parameters=count, shards=2)
    assert sharded.name == "high" and "40.0 GiB free GPU memory >= 36.9 GiB, 2 processes sharing" in why


def test_auto_names_the_gpus_that_would_hold_qwen_image_when_none_fits_one(parameters):
    """Qwen-Image's 20.4B transformer on 48 GiB GPUs: even its low profile (64 GiB) does not fit one, the reason
    says 2 such GPUs hold it under FSDP; with 2 FSDP processes it fits (38 GiB / 2 + 26 GiB)."""
    profiles, count = family_profiles("qwen-image"), parameters["qwen-image"]
    low, why = pick_profile(profiles, 48 * GIB, parameters=count, shards=1)
    assert low.name == "low" and why.startswith("only 48.0 GiB free GPU memory (< 64.0 GiB): the smallest profile")
    assert "low (LoRA, 8-bit Adam, gradient checkpointing" in why and "fits on 2 GPUs of 48 GiB under FSDP" in why
    fits, why = pick_profile(profiles, 48 * GIB, parameters=count, shards=2)
    assert fits.name == "low" and "only" not in why and "2 processes sharing the trained part" in why
    # without the count (a base model whose config could not be built) nothing is sharded or named
    assert "FSDP" not in pick_profile(profiles, 48 * GIB, parameters=None, shards=2)[1]


def test_sdxl_full_fine_tune_profiles_shard_their_adamw_states(parameters):
    """SDXL's high profile (full, AdamW: 38 GiB of weights, gradients and moments) on 4 x 60 GiB under FSDP."""
    profiles, count = family_profiles("sdxl"), parameters["sdxl"]
    assert pick_profile(profiles, 60 * GIB, parameters=count, shards=1)[0].name == "medium"
    assert pick_profile(profiles, 60 * GIB, parameters=count, shards=4)[0].name == "high"


def test_the_flux_full_fine_tune_refusal_names_the_gpus_and_lets_them_run(parameters):
    """FLUX.1 [dev] full: 177 GiB sharded + 14 GiB whole. On 80 GiB GPUs: refused on 1 or 2, runs on 3 (73 GiB
    each); the refusal names 3. On 141 GiB GPUs (H200) 2 do."""
    count = parameters["flux"]
    estimate = full_fine_tune_estimate("FLUX.1", count)
    assert round(estimate.sharded / GIB) == 177 and round(estimate.whole / GIB) == 14
    assert [round(estimate.per_gpu(n) / GIB) for n in (1, 2, 3, 8)] == [191, 103, 73, 36]
    for shards in (1, 2):
        refusal = full_fine_tune_refusal("FLUX.1", count, 80 * GIB, shards)
        assert refusal and "sharded with FSDP it fits on 3 GPUs of 80 GiB (torchrun --nproc-per-node 3" in refusal
    assert full_fine_tune_refusal("FLUX.1", count, 80 * GIB, 3) is None
    assert full_fine_tune_refusal("FLUX.1", count, 141 * GIB, 2) is None
    assert "fits on 2 GPUs of 141 GiB" in full_fine_tune_refusal("FLUX.1", count, 141 * GIB, 1)
    # no GPU here: sized for 80 GiB cards
    assert "(no GPU here): sharded with FSDP it fits on 3 GPUs of 80 GiB" in full_fine_tune_refusal("FLUX.1", count, None)


def test_the_refusal_is_a_config_error_on_the_cpu(parameters):
    import torch

    from hubtools.families.fits import check_full_fine_tune

    with pytest.raises(ConfigError, match=r"FLUX.1 \(11.9B parameters\) needs about 177 GiB"):
        check_full_fine_tune("FLUX.1", parameters["flux"], torch.device("cpu"), shards=8)
