"""Stable Diffusion 3.5: the training step against the formulas of diffusers' ``train_dreambooth_lora_sd3.py``
(written out here, not called), the prompt conditioning against the pipeline's own, the variants' defaults and
licence, and the memory profiles against the real shapes' parameter counts (built on the meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubtools.families import by_name
from test_training_support import load_tiny_family_pipeline, meta_parameter_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a photo of nlwx dog on the beach"
CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "sd35_configs.json"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_tiny_family_pipeline(tmp_path_factory.mktemp("sd3"), "sd3")


def test_the_step_is_the_scripts_flow_matching_step(pipe):
    """noise ~ N(0, 1); u = sigmoid(N(0, 1)) (logit_normal, mean 0, std 1); index = int(u * 1000); the timestep
    and sigma at that index of the training scheduler, whose sigmas are shifted: s = 1 - index / 1000,
    sigma = shift * s / (1 + (shift - 1) * s) with SD3.5's shift 3; x_t = (1 - sigma) x_0 + sigma * noise;
    preconditioned outputs: the prediction is x_t - sigma * output and the target x_0; loss weights 1."""
    family = by_name("sd3")
    scheduler = family.training_scheduler(pipe.scheduler.config)
    latents = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = family.noisy_input_and_target(scheduler, latents, torch.Generator().manual_seed(7), None,
                                          torch.device("cpu"))

    generator = torch.Generator().manual_seed(7)  # the same draws, in the script's order
    noise = torch.randn(latents.shape, generator=generator)
    u = torch.sigmoid(torch.normal(mean=0.0, std=1.0, size=(3,), generator=generator))
    index = (u * 1000).long()
    s = 1 - index.double() / 1000
    shift = 3.0
    sigma = (shift * s / (1 + (shift - 1) * s)).float()
    assert pipe.scheduler.config.shift == shift
    torch.testing.assert_close(batch.timesteps, sigma * 1000)
    x_t = (1 - sigma.view(-1, 1, 1, 1)) * latents + sigma.view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(batch.model_input, x_t)
    assert torch.equal(batch.target, latents)
    assert torch.equal(batch.weights, torch.ones(3))

    ids = family.tokenize(pipe.components, [PROMPT] * 3, torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({n: pipe.components[n] for n in family.text_encoders}, ids)
        predicted = family.predict(pipe.transformer, batch.model_input, batch.timesteps, conditioning)
        output = pipe.transformer(hidden_states=x_t, timestep=batch.timesteps,
                                  encoder_hidden_states=conditioning["prompt_embeds"],
                                  pooled_projections=conditioning["pooled_prompt_embeds"], return_dict=False)[0]
    torch.testing.assert_close(predicted, output * (-sigma.view(-1, 1, 1, 1)) + x_t)


def test_prompt_conditioning_is_what_its_pipeline_computes(pipe):
    """Three tokenizers (CLIP 77, CLIP 77, T5 77 as the script trains); CLIPs' penultimate states side by side,
    padded to T5's width, then T5's along the tokens; the CLIPs' pooled outputs side by side."""
    family = by_name("sd3")
    ids = family.tokenize(pipe.components, [PROMPT], torch.device("cpu"))
    assert [ids[name].shape[1] for name in family.text_encoders] == [77, 77, 77]
    with torch.no_grad():
        conditioning = family.encode_prompts({n: pipe.components[n] for n in family.text_encoders}, ids)
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, do_classifier_free_guidance=False,
                                                         max_sequence_length=77)
    assert conditioning["prompt_embeds"].shape == (1, 154, 64)
    assert torch.equal(conditioning["prompt_embeds"], prompt_embeds)
    assert torch.equal(conditioning["pooled_prompt_embeds"], pooled)


def test_variants_sample_and_license_as_their_model_cards_say():
    family = by_name("sd3")
    configs = json.loads(CONFIGS.read_text())
    large, medium = configs["transformer"]["large"], configs["transformer"]["medium"]
    assert (family.sampling_defaults(large).num_inference_steps, family.sampling_defaults(large).guidance_scale) == (28, 3.5)
    assert (family.sampling_defaults(medium).num_inference_steps, family.sampling_defaults(medium).guidance_scale) == (40, 4.5)
    for config in (large, medium):
        licence = family.default_license(config)
        assert (licence.id, licence.name) == ("other", "stabilityai-ai-community")
        assert licence.link == "https://stability.ai/community-license-agreement"
        assert "USD 1M" in licence.note and "commercial" in licence.note
    snippet = family.card_snippet(large, "ddim", 1024)
    assert snippet["pipeline_class"] == "StableDiffusion3Pipeline" and snippet["dtype"] == "torch.bfloat16"
    assert snippet["scheduler_class"] is None and snippet["call_args"] == ""  # its own scheduler, its own size


def test_memory_profiles_hold_the_real_shapes_parameters():
    """The real SD3.5 shapes built on the meta device hold the parameters benchmarks/sd35_configs.json records;
    every profile is a LoRA one with room for Large's frozen parts in bf16, and a full fine-tune of Large is
    refused without ~120 GiB of GPU memory."""
    from hubtools.config import RunConfig
    from hubtools.families.sd3 import real_shape_models
    from hubtools.training.memory import choose_profile, family_profiles

    configs = json.loads(CONFIGS.read_text())
    counts = {}
    for variant in ("large", "medium"):
        _, counts[variant] = meta_parameter_counts(real_shape_models, configs, variant)
    assert counts == configs["parameters"]
    assert 8.0e9 < counts["large"]["transformer"] < 8.1e9 and 2.2e9 < counts["medium"]["transformer"] < 2.3e9

    profiles = family_profiles("sd3")
    assert [p.name for p in profiles] == ["high", "medium", "low"] and {p.method for p in profiles} == {"lora"}
    bf16_large = 2 * sum(counts["large"].values())
    assert profiles[-1].min_free_gib * 2**30 > bf16_large
    assert [p.min_free_gib for p in profiles] == sorted((p.min_free_gib for p in profiles), reverse=True)
    cfg = RunConfig.model_validate({"model": {"base_model": "x"}, "training": {"memory": "low"}})
    assert choose_profile(cfg, torch.device("cpu"), "sd3").method == "lora"

    with torch.device("meta"):
        transformer = real_shape_models(configs, "large")["transformer"]
    from hubtools.errors import ConfigError

    with pytest.raises(ConfigError, match=r"full fine-tune of Stable Diffusion 3.5 \(8.1B parameters\) needs about "
                                          r"120 GiB .*--method lora"):
        by_name("sd3").check_training("full", transformer, torch.device("cpu"))


def test_a_command_line_config_gets_the_family_defaults_it_left_unset(tmp_path):
    """``--base-model`` alone: SD3.5's defaults (LoRA, 1024 px, its steps and guidance) fill every setting the
    command line left unset; what it set stays."""
    from hubtools.cli.run_options import build_config
    from hubtools.families import apply_family_defaults

    family, config = by_name("sd3"), {"dual_attention_layers": []}
    unset = apply_family_defaults(build_config(None, [], {"model.base_model": "x/y", "training.steps": 3}), family,
                                  config)
    assert (unset.training.method, unset.training.resolution, unset.training.steps) == ("lora", 1024, 3)
    assert (unset.sampling.num_inference_steps, unset.sampling.guidance_scales) == (28, [2.5, 3.5, 4.5])
    assert unset.resolve().training.learning_rate == 1e-4
    chosen = apply_family_defaults(build_config(None, ["training.resolution=512"], {"model.base_model": "x/y",
                                                "training.method": "full"}), family, config)
    assert (chosen.training.method, chosen.training.resolution) == ("full", 512)
