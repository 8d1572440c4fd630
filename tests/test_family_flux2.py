"""FLUX.2 [dev] and [klein]: the training step against the formulas of diffusers'
``train_dreambooth_lora_flux2.py`` / ``train_dreambooth_lora_flux2_klein.py`` (written out here, not called), the
latents, conditioning and model call against the pipelines' own, the offline tokenizers, the card facts, the
real shapes' memory profiles, and [dev]'s LoRA-only refusal as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hubtools.errors import ConfigError
from hubtools.families import by_name
from test_training_support import load_tiny_family_pipeline, meta_parameter_counts, subprocess_env, tiny_family_base

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "flux2_configs.json"
PROMPTS = ["a photo of nlwx dog on the beach", "a dog"]
FAMILIES = ("flux2", "flux2-klein")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("flux2")


@pytest.fixture(scope="module")
def pipes(root):
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = load_tiny_family_pipeline(root, name)
        return loaded[name]

    return get


def _patchify(x):  # the script's Flux2Pipeline._patchify_latents, written out
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_step_is_the_scripts_flow_matching(pipes, name):
    """Written out from the scripts: model_input = patchify(latents); noise = randn_like(model_input);
    u = U(0, 1) ("none" weighting); indices = (u * T).long(); t = scheduler.timesteps[indices];
    sigma = scheduler.sigmas at t; x_t = (1 - sigma) x + sigma noise; target = noise - x; weighting 1."""
    family = by_name(name)
    pipe = pipes(name)
    scheduler = family.training_scheduler(pipe.scheduler.config)
    latents = torch.randn(3, 32, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = family.noisy_input_and_target(scheduler, latents, torch.Generator().manual_seed(5),
                                          SimpleNamespace(offset_noise=0.0, snr_gamma=None), torch.device("cpu"))

    generator = torch.Generator().manual_seed(5)  # the same draws, in the script's order
    model_input = _patchify(latents)
    noise = torch.randn(model_input.shape, generator=generator)
    u = torch.rand(3, generator=generator)
    timesteps = scheduler.timesteps[(u * 1000).long()]
    step_indices = [(scheduler.timesteps == t).nonzero().item() for t in timesteps]  # the script's get_sigmas
    sigmas = scheduler.sigmas[step_indices].view(-1, 1, 1, 1)
    assert torch.equal(batch.timesteps, timesteps)
    assert torch.equal(_patchify(batch.model_input), (1.0 - sigmas) * model_input + sigmas * noise)
    assert torch.equal(_patchify(batch.target), noise - model_input)
    assert batch.weights is None  # "none": every example weighs 1
    # FLUX.2's scheduler shifts at sampling only (dynamic shifting): the training sigmas are the plain t / 1000
    assert torch.allclose(scheduler.sigmas, scheduler.timesteps / 1000)


@pytest.mark.parametrize("name", FAMILIES)
def test_latents_conditioning_and_model_call_are_the_scripts(pipes, name):
    family = by_name(name)
    pipe = pipes(name)
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        mean, std = family.latent_distribution(pipe.vae, pixels)
        # the script: the mode, patchified, normalised by the VAE's batch-norm statistics (the pipeline's own)
        expected = pipe._encode_vae_image(pixels, generator=None)
        mode = _patchify(pipe.vae.encode(pixels).latent_dist.mode())
    bn_std = torch.sqrt(pipe.vae.bn.running_var + pipe.vae.config.batch_norm_eps).view(1, -1, 1, 1)
    torch.testing.assert_close(_patchify(mean), expected)
    torch.testing.assert_close(_patchify(mean), (mode - pipe.vae.bn.running_mean.view(1, -1, 1, 1)) / bn_std)
    assert not torch.equal(pipe.vae.bn.running_mean, torch.zeros_like(pipe.vae.bn.running_mean))  # not a no-op
    assert torch.equal(std, torch.zeros_like(std))

    ids = family.tokenize(pipe.components, PROMPTS, torch.device("cpu"))
    with torch.no_grad():
        conditioning = family.encode_prompts({"text_encoder": pipe.text_encoder}, ids)
        prompt_embeds, text_ids = pipe.encode_prompt(PROMPTS, device=torch.device("cpu"))
        assert torch.equal(conditioning["prompt_embeds"], prompt_embeds)
        assert prompt_embeds.shape == (2, 512, pipe.transformer.config.joint_attention_dim)

        timesteps = torch.tensor([250.0, 750.0])
        prediction = family.predict(pipe.transformer, mean, timesteps, conditioning)
        packed = _patchify(mean).flatten(2).permute(0, 2, 1)
        image_ids = pipe._prepare_latent_ids(_patchify(mean))
        guidance = torch.full((2,), 3.5) if name == "flux2" else None  # the script's --guidance_scale default
        raw = pipe.transformer(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                               encoder_hidden_states=prompt_embeds, txt_ids=text_ids, img_ids=image_ids,
                               return_dict=False)[0]
    assert pipe.transformer.config.guidance_embeds == (name == "flux2")
    assert prediction.shape == mean.shape
    assert torch.equal(_patchify(prediction), raw.permute(0, 2, 1).reshape(2, 128, 4, 4))


def test_the_offline_tokenizers_write_the_models_chat_markup_and_round_trip(pipes, tmp_path):
    from transformers import AutoTokenizer

    dev = pipes("flux2").tokenizer
    ids = by_name("flux2").tokenize({"tokenizer": dev}, [PROMPTS[0]], torch.device("cpu"))
    text = dev.decode(ids["text_encoder"][0][ids["text_encoder_mask"][0].bool()])
    assert text.startswith("<s>[SYSTEM_PROMPT]You are an AI") and text.endswith(f"[INST]{PROMPTS[0]}[/INST]")
    dev.save_pretrained(tmp_path / "dev")
    assert AutoTokenizer.from_pretrained(tmp_path / "dev")(text).input_ids == dev(text).input_ids

    klein = pipes("flux2-klein").tokenizer
    ids = by_name("flux2-klein").tokenize({"tokenizer": klein}, [PROMPTS[0]], torch.device("cpu"))
    text = klein.decode(ids["text_encoder"][0][ids["text_encoder_mask"][0].bool()])
    assert text == f"<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    # byte-level tokenizers: the identifier is one token a letter in both
    for tokenizer in (dev, klein):
        assert len(tokenizer("nlwx", add_special_tokens=False).input_ids) == 4


def test_variants_licences_and_card_facts():
    dev, klein = by_name("flux2"), by_name("flux2-klein")
    configs = json.loads(CONFIGS.read_text())
    assert dev.variant(configs["dev"]["transformer"]) == "dev"
    assert klein.variant(configs["4b"]["transformer"]) == "4b" and klein.variant(configs["9b"]["transformer"]) == "9b"
    assert klein.default_license(configs["4b"]["transformer"]).id == "apache-2.0"
    for family, config in ((dev, configs["dev"]["transformer"]), (klein, configs["9b"]["transformer"])):
        licence = family.default_license(config)
        assert licence.id == "other" and "non-commercial" in licence.name and licence.link.endswith("LICENSE.md")
        assert "Non-Commercial" in licence.note
    for family, pipeline_class in ((dev, "Flux2Pipeline"), (klein, "Flux2KleinPipeline")):
        snippet = family.card_snippet({}, "ddim", 1024)
        assert (snippet["pipeline_class"], snippet["dtype"], snippet["scheduler_class"]) == (pipeline_class,
                                                                                             "torch.bfloat16", None)
        assert snippet["call_args"] == ", height=1024, width=1024"
        assert family.sampling_scheduler_label("ddim") == "flow-matching Euler"
        assert family.sampling_defaults({}).num_inference_steps == 50


def test_memory_profiles_hold_the_real_shapes_parameters():
    """The real shapes built on the meta device hold the parameters flux2_configs.json records; every profile is
    a LoRA one with room for the frozen bf16 parts (the largest variant for [klein]); a full fine-tune of the
    real klein 9B is refused on a CPU."""
    from hubtools.families.flux2 import real_shape_models
    from hubtools.training.memory import family_profiles

    configs = json.loads(CONFIGS.read_text())
    counts = {}
    for variant in ("dev", "4b", "9b"):
        _, counts[variant] = meta_parameter_counts(real_shape_models, configs, variant)
    assert counts == configs["parameters"]
    assert 32.1e9 < counts["dev"]["transformer"] < 32.3e9 and 23.9e9 < counts["dev"]["text_encoder"] < 24.1e9
    assert 3.8e9 < counts["4b"]["transformer"] < 3.9e9 and 9.0e9 < counts["9b"]["transformer"] < 9.1e9
    for name, variant in (("flux2", "dev"), ("flux2-klein", "9b")):
        profiles = family_profiles(name)
        assert [p.name for p in profiles] == ["high", "medium", "low"] and {p.method for p in profiles} == {"lora"}
        assert profiles[-1].min_free_gib * 2**30 > 2 * sum(counts[variant].values())
    with pytest.raises(ConfigError, match=r"FLUX.2 \[klein\] \(9.1B parameters\) needs about"):
        with torch.device("meta"):
            transformer = real_shape_models(configs, "9b")["transformer"]
        by_name("flux2-klein").check_training("full", transformer, torch.device("cpu"))


def test_a_full_fine_tune_of_flux2_dev_is_refused_in_one_line(root, tmp_path):
    """As a user runs it: the preflight refuses before anything is loaded, one line, no traceback."""
    from hubtools.resources import DEMO_CONCEPT_DIR

    with pytest.raises(ConfigError, match=r"^FLUX.2 \[dev\] trains a LoRA only .*use --method lora$"):
        by_name("flux2").check_method("full")
    base = tiny_family_base(root, "flux2")
    done = subprocess.run([sys.executable, "-m", "hubtools", "train", "--dry-run", "--base-model", str(base),
                           "--concept", str(DEMO_CONCEPT_DIR), "--identifier", "nlwx", "--class-noun", "dog",
                           "--method", "full", "--out", str(tmp_path / "run"), "--device", "cpu"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "trains a LoRA only" in lines[0] and "--method lora" in lines[0], done.stderr


def test_the_bfl_layout_lora_is_the_same_lora_for_comfyui_and_diffusers(pipes, root, tmp_path):
    """The copy in BFL's names: by ComfyUI's rule (each ``diffusion_model.<module>`` weight += lora_B @ lora_A,
    scale 1 without an alpha) every fused q/k/v update is exactly diffusers' three updates stacked; and diffusers'
    own FLUX.2 loader, given the copy, draws what the diffusers file draws."""
    import numpy as np
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file, save_file

    from hubtools.families.flux2 import LORA_TARGETS
    from hubtools.training.lora import add_lora_adapters

    family = by_name("flux2")
    pipe = DiffusionPipeline.from_pretrained(tiny_family_base(root, "flux2"))
    add_lora_adapters(pipe.transformer, {}, rank=4, alpha=8.0, denoiser_targets=LORA_TARGETS, text_encoder_targets=())
    with torch.no_grad():  # a LoRA that does something: its up weights are zero when it starts
        generator = torch.Generator().manual_seed(0)
        for name, param in pipe.transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    saved = family.save_lora(tmp_path, "pytorch_lora_weights.safetensors", {"transformer": pipe.transformer})
    copy = family.kohya_lora_state(saved)
    diffusers = load_file(saved)

    def update(module):  # diffusers' update of one module, with the adapter's alpha / rank = 2
        return 2.0 * diffusers[f"transformer.{module}.lora_B.weight"] @ diffusers[f"transformer.{module}.lora_A.weight"]

    assert not any(key.endswith(".alpha") for key in copy)
    fused = copy["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"] @ copy[
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"]
    block = "transformer_blocks.0.attn"
    torch.testing.assert_close(fused, torch.cat([update(f"{block}.to_q"), update(f"{block}.to_k"),
                                                 update(f"{block}.to_v")]))
    single = copy["diffusion_model.single_blocks.1.linear1.lora_B.weight"] @ copy[
        "diffusion_model.single_blocks.1.linear1.lora_A.weight"]
    torch.testing.assert_close(single, update("single_transformer_blocks.1.attn.to_qkv_mlp_proj"))
    assert {key.split(".")[1] for key in copy} == {"double_blocks", "single_blocks"}

    copy_file = tmp_path / "bfl" / "nlwx.safetensors"
    copy_file.parent.mkdir()
    save_file(copy, copy_file)
    images = []
    for weights in (saved, copy_file):
        loaded = DiffusionPipeline.from_pretrained(tiny_family_base(root, "flux2"))
        loaded.set_progress_bar_config(disable=True)
        loaded.load_lora_weights(str(weights))
        images.append(loaded(prompt=PROMPTS[0], num_inference_steps=2, height=64, width=64, output_type="np",
                             generator=torch.Generator().manual_seed(0)).images[0])
    base = pipes("flux2")(prompt=PROMPTS[0], num_inference_steps=2, height=64, width=64, output_type="np",
                          generator=torch.Generator().manual_seed(0)).images[0]
    assert np.abs(images[0] - base).max() > 1e-3  # the LoRA changes the drawing
    np.testing.assert_allclose(images[1], images[0], atol=1e-5)


def test_identifier_check_reads_the_models_own_tokenizer(root):
    """``hubtools identifier check --base-model`` on a family without CLIP: a note, the split in its own
    tokenizer, exit 0 (it used to load a CLIP tokenizer from the Mistral folder and fail)."""
    base = tiny_family_base(root, "flux2")
    done = subprocess.run([sys.executable, "-m", "hubtools", "identifier", "check", "nlwx", "--base-model", str(base)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FLUX.2 [dev] reads prompts with no CLIP tokenizer" in done.stderr + done.stdout
    assert "n + l + w + x" in done.stdout
