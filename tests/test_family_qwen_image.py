"""Qwen-Image: the training step against the formulas of diffusers' ``train_dreambooth_lora_qwen_image.py``
(written out here, not called), the prompt conditioning and latents against the pipeline's own, the offline
tokenizer against the pipeline's template, and the card facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubtools.families import by_name
from test_training_support import load_tiny_family_pipeline, meta_parameter_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "qwen_image_configs.json"
PROMPTS = ["a photo of nlwx dog on the beach", "a dog"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_tiny_family_pipeline(tmp_path_factory.mktemp("qwen_image"), "qwen-image")


def test_the_offline_tokenizer_reads_the_template_as_qwen_does(pipe):
    """The pipeline drops the template's first 34 tokens (``prompt_template_encode_start_idx``): the tiny
    tokenizer splits that prefix into exactly those 34 (one per word, as Qwen2.5-VL's), and round-trips."""
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix).input_ids) == pipe.prompt_template_encode_start_idx == 34
    ids = pipe.tokenizer(PROMPTS[0]).input_ids
    assert pipe.tokenizer.decode(ids) == PROMPTS[0]
    again = by_name("qwen-image").build_tiny_pipeline().tokenizer
    assert again(PROMPTS[0]).input_ids == ids and len(again) == len(pipe.tokenizer)


def test_prompt_conditioning_and_latents_are_what_its_pipeline_computes(pipe):
    family = by_name("qwen-image")
    ids = family.tokenize(pipe.components, PROMPTS, torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({"text_encoder": pipe.text_encoder}, ids)
        prompt_embeds, mask = pipe.encode_prompt(PROMPTS, max_sequence_length=512)
    assert torch.equal(conditioning["prompt_embeds"], prompt_embeds)
    assert torch.equal(conditioning["prompt_embeds_mask"], mask)
    assert mask[1].sum() < mask[0].sum()  # the shorter caption is padded and masked

    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        mean, std = family.latent_distribution(pipe.vae, pixels)
        dist = pipe.vae.encode(pixels.unsqueeze(2)).latent_dist
    latents = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    sample = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(3))
    channel_mean = torch.tensor(pipe.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    channel_std = torch.tensor(pipe.vae.config.latents_std).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(latents, ((sample - channel_mean) * (1.0 / channel_std)).squeeze(2))


def test_the_step_is_the_scripts_flow_matching_step(pipe):
    """noise ~ N(0, 1); u ~ U(0, 1) (weighting scheme none); index = int(u * 1000); the scheduler's timestep and
    sigma there: with Qwen-Image's dynamic shifting the training table is unshifted, sigma = 1 - index / 1000
    (the script's shift=3.0 is inert); x_t = (1 - sigma) x_0 + sigma * noise; target noise - x_0; weights 1;
    the transformer sees 2x2-packed latents, timestep / 1000, img_shapes and the caption mask."""
    from diffusers import QwenImagePipeline

    family = by_name("qwen-image")
    scheduler = family.training_scheduler(pipe.scheduler.config)
    assert scheduler.config.use_dynamic_shifting and scheduler.config.shift == 3.0
    latents = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = family.noisy_input_and_target(scheduler, latents, torch.Generator().manual_seed(7), None,
                                          torch.device("cpu"))
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(latents.shape, generator=generator)
    index = (torch.rand(2, generator=generator) * 1000).long()
    sigma = (1 - index.double() / 1000).float()
    torch.testing.assert_close(batch.timesteps, sigma * 1000)
    x_t = (1 - sigma.view(-1, 1, 1, 1)) * latents + sigma.view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(batch.model_input, x_t)
    torch.testing.assert_close(batch.target, noise - latents)
    assert torch.equal(batch.weights, torch.ones(2))

    ids = family.tokenize(pipe.components, PROMPTS, torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({"text_encoder": pipe.text_encoder}, ids)
        predicted = family.predict(pipe.transformer, x_t, batch.timesteps, conditioning)
        packed = QwenImagePipeline._pack_latents(x_t.unsqueeze(2).permute(0, 2, 1, 3, 4), 2, 16, 8, 8)
        output = pipe.transformer(hidden_states=packed, encoder_hidden_states=conditioning["prompt_embeds"],
                                  encoder_hidden_states_mask=conditioning["prompt_embeds_mask"],
                                  timestep=batch.timesteps / 1000, img_shapes=[(1, 4, 4)] * 2, return_dict=False)[0]
    torch.testing.assert_close(predicted, QwenImagePipeline._unpack_latents(output, 64, 64, 8).squeeze(2))


def test_card_facts():
    family = by_name("qwen-image")
    defaults = family.sampling_defaults({})
    assert (defaults.num_inference_steps, defaults.guidance_scale, defaults.extra) == (50, 4.0, {"negative_prompt": " "})
    assert family.guidance_kwargs(4.0) == {"true_cfg_scale": 4.0}
    assert family.default_license({}).id == "apache-2.0"
    snippet = family.card_snippet({}, "ddim", 1024)
    assert snippet["pipeline_class"] == "QwenImagePipeline" and snippet["guidance_arg"] == "true_cfg_scale"
    assert snippet["call_args"] == ", height=1024, width=1024, negative_prompt=' '"


def test_memory_profiles_hold_the_real_shapes_parameters():
    """Qwen-Image's real shapes built on the meta device hold the parameters qwen_image_configs.json records;
    every profile is a LoRA one with room for the frozen parts in bf16; a full fine-tune is refused."""
    from hubtools.errors import ConfigError
    from hubtools.families.qwen_image import real_shape_models
    from hubtools.training.memory import family_profiles

    configs = json.loads(CONFIGS.read_text())
    models, counts = meta_parameter_counts(real_shape_models, configs)
    assert counts == configs["parameters"]
    assert 20.4e9 < counts["transformer"] < 20.5e9 and 8.2e9 < counts["text_encoder"] < 8.3e9
    profiles = family_profiles("qwen-image")
    assert [p.name for p in profiles] == ["high", "medium", "low"] and {p.method for p in profiles} == {"lora"}
    assert profiles[-1].min_free_gib * 2**30 > 2 * sum(counts.values())
    with pytest.raises(ConfigError, match=r"Qwen-Image \(20.4B parameters\) needs about 304 GiB"):
        by_name("qwen-image").check_training("full", models["transformer"], torch.device("cpu"))
