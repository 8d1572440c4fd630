"""Z-Image: the training step against the formulas of diffusers' ``train_dreambooth_lora_z_image.py``, its
conditioning against ``ZImagePipeline``'s own, and the offline Qwen tokenizer of its tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hubtools.errors import ConfigError
from hubtools.families import by_name
from test_training_support import load_tiny_family_pipeline, meta_parameter_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a photo of nlwx dog on the beach"
CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "zimage_configs.json"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_tiny_family_pipeline(tmp_path_factory.mktemp("zimage"), "z-image")


def test_the_step_is_the_scripts_flow_matching(pipe):
    """Written out from the script: noise = randn_like(x); u = U(0, 1) ("none" weighting);
    indices = (u * T).long(); t = scheduler.timesteps[indices]; sigma = scheduler.sigmas[indices];
    x_t = (1 - sigma) x + sigma noise; the model sees (1000 - t) / 1000; target = noise - x; weighting 1."""
    family = by_name("z-image")
    scheduler = family.training_scheduler(pipe.scheduler.config)
    latents = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = family.noisy_input_and_target(scheduler, latents, torch.Generator().manual_seed(5),
                                          SimpleNamespace(offset_noise=0.0, snr_gamma=None), torch.device("cpu"))

    generator = torch.Generator().manual_seed(5)  # the same draws, in the script's order
    noise = torch.randn(latents.shape, generator=generator)
    u = torch.rand(3, generator=generator)
    indices = (u * scheduler.config.num_train_timesteps).long()
    timesteps = scheduler.timesteps[indices]
    sigmas = scheduler.sigmas[indices].view(-1, 1, 1, 1)
    assert torch.equal(batch.model_input, (1.0 - sigmas) * latents + sigmas * noise)
    assert torch.equal(batch.timesteps, (1000 - timesteps) / 1000)
    assert torch.equal(batch.target, noise - latents)
    assert batch.weights is None  # the script's default weighting scheme ("none") weighs every example 1
    # the scheduler's shift (3) is in its training timesteps: mid-schedule picks lean towards noise
    assert torch.allclose(scheduler.sigmas[500], torch.tensor(3 * 0.5 / (1 + 2 * 0.5)), atol=2e-3)


def test_conditioning_and_prediction_are_the_pipelines(pipe):
    family = by_name("z-image")
    ids = family.tokenize(pipe.components, [PROMPT, "a dog"], torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({"text_encoder": pipe.text_encoder}, ids)
        expected = pipe.encode_prompt([PROMPT, "a dog"], device=torch.device("cpu"), do_classifier_free_guidance=False)[0]
        mask = conditioning["prompt_mask"]
        for row, reference in enumerate(expected):
            assert torch.equal(conditioning["prompt_embeds"][row][mask[row]], reference)
        latents = torch.randn(2, 16, 8, 8)
        timesteps = torch.tensor([0.25, 0.75])
        prediction = family.predict(pipe.transformer, latents, timesteps, conditioning)
        raw = pipe.transformer(list(latents.unsqueeze(2).unbind(0)), timesteps, list(expected), return_dict=False)[0]
    assert prediction.shape == latents.shape
    assert torch.equal(prediction, -torch.stack(raw).squeeze(2))  # the script negates the model's output


def test_the_offline_qwen_tokenizer_writes_qwens_chat_markup_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    from hubtools.families.zimage import build_qwen_chat_tokenizer

    tokenizer = build_qwen_chat_tokenizer()
    marked = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=True)
    assert marked == f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(marked).input_ids
    assert tokenizer.decode(ids) == marked
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(marked).input_ids == ids


def test_card_facts_and_a_full_fine_tune_of_the_real_size_is_refused_without_the_memory(pipe, monkeypatch):
    from hubtools.families import flow_matching

    family = by_name("z-image")
    assert family.default_license({}).id == "apache-2.0"
    snippet = family.card_snippet({}, "ddim", 64)
    assert (snippet["pipeline_class"], snippet["dtype"], snippet["scheduler_class"]) == ("ZImagePipeline",
                                                                                         "torch.bfloat16", None)
    assert "height=64" in snippet["call_args"] and "max_sequence_length=512" in snippet["call_args"]
    family.check_training("full", pipe.transformer, torch.device("cpu"))  # the tiny model trains fully anywhere
    monkeypatch.setattr(flow_matching, "ALWAYS_FULL_BELOW", 0)  # as if it were the 6B model
    with pytest.raises(ConfigError, match=r"full fine-tune of Z-Image .*\(no GPU here\): .*train a LoRA instead"):
        family.check_training("full", pipe.transformer, torch.device("cpu"))


def test_memory_profiles_hold_the_real_shapes_parameters():
    """Z-Image's real shapes (Z-Image-Turbo's configs) built on the meta device hold the parameters
    zimage_configs.json records (a 6.15B transformer, Qwen3-4B); every profile is a LoRA one with room for every
    frozen part in bf16; a full fine-tune of the real transformer is refused on a CPU, with its size."""
    from hubtools.families.zimage import real_shape_models
    from hubtools.training.memory import family_profiles

    configs = json.loads(CONFIGS.read_text())
    models, counts = meta_parameter_counts(real_shape_models, configs)
    assert counts == configs["parameters"]
    assert 6.1e9 < counts["transformer"] < 6.2e9 and 4.0e9 < counts["text_encoder"] < 4.1e9
    profiles = family_profiles("z-image")
    assert [p.name for p in profiles] == ["high", "medium", "low"] and {p.method for p in profiles} == {"lora"}
    assert profiles[-1].min_free_gib * 2**30 > 2 * sum(counts.values())
    assert [p.min_free_gib for p in profiles] == sorted((p.min_free_gib for p in profiles), reverse=True)
    with pytest.raises(ConfigError, match=r"full fine-tune of Z-Image \(6.2B parameters\)"):
        by_name("z-image").check_training("full", models["transformer"], torch.device("cpu"))
    assert by_name("z-image").default_license({}).note == "Apache 2.0: commercial use allowed"
